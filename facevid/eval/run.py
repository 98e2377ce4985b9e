"""`facevid eval`: the benchmarks run together on one model, their sheets, and their tables."""

from __future__ import annotations

from pathlib import Path

from facevid.errors import InputError


def evaluate(weights, *, data: str | Path | None = None, holdout: str | Path | None = None, max_frames: int = 100,
             max_clips: int = 0, steps: int | None = None, sheet: str | Path | None = None, cross: bool = False,
             synthetic: bool = False, pairs: str | Path | None = None, media: str | Path | None = None,
             edits: str | Path | None = None, transfer_options: dict | None = None, device: str = "cpu",
             force: bool = False, progress: bool = False) -> dict:
    """Self-reenactment (and with `cross` cross-reenactment) on the clips of a prepared cache
    (`holdout`: a file of the identities to use), and with `synthetic` the synthetic-head
    benchmark, and with `pairs` (a pair list, its paths under `media`) the transfer benchmark on
    full output frames (facevid.eval.transfer_bench; `transfer_options` go to `transfer`; `progress`
    draws its bar on a terminal), and with `edits` (a clip list, its paths under `media`) the edit
    benchmark (facevid.eval.edit_bench, up to 24 frames a clip):
    {"self_reenactment", "cross_reenactment", "synthetic", "transfer", "edit"} (None where not run);
    `sheet` writes PNGs of side-by-side frames (NAME.png, NAME_cross.png, NAME_synthetic.png,
    NAME_transfer.png: each pair's worst frames at the face's own pixels)."""
    from facevid.eval.edit_bench import edit_benchmark
    from facevid.eval.factors import SYNTHETIC_COLUMNS, synthetic_benchmark
    from facevid.eval.reenactment import CROSS_COLUMNS, SHEET_COLUMNS, cross_reenactment, self_reenactment
    from facevid.eval.report import save_grid
    from facevid.eval.transfer_bench import PAIR_COLUMNS, transfer_benchmark
    from facevid.io.writer import check_output_path
    from facevid.weights import as_model

    if data is None and not synthetic and pairs is None and edits is None:
        raise InputError("pass --data with the evaluation clips, --pairs with a transfer pair list, --edits with "
                         "an edit clip list, or --synthetic")
    pair_list, edit_clips = _lists(pairs, edits, media)
    sheet = Path(sheet) if sheet is not None else None
    sheets = {"": SHEET_COLUMNS, **({"_cross": CROSS_COLUMNS} if cross and data is not None else {}),
              **({"_synthetic": SYNTHETIC_COLUMNS} if synthetic else {}),
              **({"_transfer": PAIR_COLUMNS} if pair_list else {})}
    if sheet is not None:
        if sheet.suffix.lower() != ".png":
            raise InputError(f"--sheet must name a .png file, got {sheet.name}")
        for suffix in sheets:
            check_output_path(sheet.with_name(sheet.stem + suffix + sheet.suffix), force)
    clips = _clips(data, holdout, max_clips)
    model = as_model(weights, device)
    rows: dict[str, list] = {suffix: [] for suffix in sheets}
    keep = (lambda suffix: rows[suffix]) if sheet else (lambda suffix: None)
    result = {
        "self_reenactment": self_reenactment(model, clips, max_frames=max_frames, steps=steps,
                                             sheet_rows=keep("")) if clips else None,
        "cross_reenactment": cross_reenactment(model, clips, max_frames=min(max_frames, 40), steps=steps,
                                               sheet_rows=keep("_cross")) if cross and clips else None,
        "synthetic": synthetic_benchmark(model, steps=steps, sheet_rows=keep("_synthetic")) if synthetic else None,
        "transfer": transfer_benchmark(model, pair_list, max_frames=max_frames,
                                       options={**({"steps": steps} if steps is not None else {}),
                                                **(transfer_options or {})},
                                       sheet_rows=keep("_transfer"), progress=progress) if pair_list else None,
        "edit": edit_benchmark(model, edit_clips, max_frames=min(max_frames, 24), progress=progress)
        if edit_clips else None,
    }
    result["clips"] = len(clips)
    for suffix, columns in sheets.items():
        if sheet and rows[suffix]:
            save_grid(rows[suffix], sheet.with_name(sheet.stem + suffix + sheet.suffix), columns,
                      cell=256 if suffix == "_transfer" else 128)
    return result


def _lists(pairs, edits, media) -> tuple[list, list]:
    """The transfer benchmark's pairs and the edit benchmark's clips (empty where not asked)."""
    from facevid.eval.edit_bench import read_clips
    from facevid.eval.transfer_bench import read_pairs

    if (pairs is None and edits is None) != (media is None):
        raise InputError("--pairs and --edits go with --media: the list and the folder its paths are under")
    return (read_pairs(pairs, media) if pairs is not None else [],
            read_clips(edits, media) if edits is not None else [])


def _clips(data, holdout, max_clips: int) -> list:
    """The evaluation clips of a prepared cache, only `holdout`'s identities where given."""
    from facevid.io.cache import load_cache, read_identities

    if data is None:
        return []
    identities = read_identities(holdout)
    clips = load_cache(data, include=set(identities) if identities else None)
    clips = clips[:max_clips] if max_clips else clips
    if not clips:
        raise InputError(f"no evaluation clips in {data}" + (f" for the identities in {holdout}" if holdout else ""))
    return clips


def tables(result: dict) -> str:
    """The results of `evaluate` as Markdown tables, with a line each on what was measured."""
    parts = []
    if result.get("self_reenactment"):
        parts.append(_self_reenactment(result["self_reenactment"], result.get("clips", 0)))
    if result.get("cross_reenactment"):
        parts.append(_cross(result["cross_reenactment"]))
    if result.get("synthetic"):
        parts.append(_synthetic(result["synthetic"]))
    if result.get("transfer"):
        from facevid.eval.transfer_bench import table

        parts.append(table(result["transfer"]))
    if result.get("edit"):
        from facevid.eval.edit_bench import table as edit_table

        parts.append(edit_table(result["edit"]))
    return "\n\n".join(parts)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _self_reenactment(table: dict, clips: int) -> str:
    from facevid.eval.reenactment import MOUTH_OPENS

    bits = table["_bits_per_frame"]
    lines = [f"self-reenactment on {clips} held-out clips, {table['_frames']} frames; model {table['_model_fps']:.1f} "
             f"frames/s, encode→decode {table['_reconstruction_fps']:.1f} frames/s; motion {bits['nominal']:.0f} "
             f"bits/frame nominal, {bits['stored']} stored, {bits['entropy']:.1f} code entropy over these frames; "
             f"real frames without a face (dlib): {table['_real_no_face']:.0%}; mouth PSNR: the mouth's box on the "
             f"{table['_mouth_frames']} frames whose lips part more than frame 0's by {MOUTH_OPENS} IOD",
             "| method | PSNR (dB) | SSIM | L1 | AKD | no face | mouth PSNR |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {row['psnr']:.2f} | {row['ssim']:.3f} | {row['l1']:.4f} | {_number(row['akd'], '.4f')} | "
              f"{_number(row['no_face'], '.0%')} | {_number(row['mouth_psnr'], '.2f')} |"
              for name, row in table.items() if not name.startswith("_")]
    return "\n".join(lines)


def _cross(table: dict) -> str:
    lines = ["cross-reenactment (each clip's first frame driven by the next clip's person)",
             "| method | identity dist | same person | motion error | jitter | TL-ID | TG-ID |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {row['identity']:.3f} | {row['same_person']:.0%} | {row['motion']:.3f} | "
              f"{row['jitter']:.3f} | {row['tl_id']:.3f} | {row['tg_id']:.3f} |" for name, row in table.items()]
    return "\n".join(lines)


def _synthetic(result: dict) -> str:
    from facevid.synthetic import MOTION_FACTORS

    estimator = result["estimator"]
    r2 = estimator["r2"]
    lines = [f"synthetic heads: {result['pairs']} pairs x {result['frames']} frames, errors in training-set stds; "
             f"factor estimator fitted in {estimator['seconds']:.1f} s, held-out R²: "
             + ", ".join(f"{k} {r2[k]:.2f}" for k in MOTION_FACTORS)
             + f"; group errors over the factors with R² ≥ {estimator['measurable_r2']} ("
             f"{len(result['identity_factors'])} identity, motion: {', '.join(result['motion_factors'])})",
             "| method | identity err | motion err | PSNR vs truth | " + " | ".join(MOTION_FACTORS) + " |",
             "|---" * (4 + len(MOTION_FACTORS)) + "|"]
    lines += [f"| {name} | {_number(row['identity'], '.3f')} | {_number(row['motion'], '.3f')} | {row['psnr']:.2f} | "
              + " | ".join(f"{row[k]:.3f}" for k in MOTION_FACTORS) + " |" for name, row in result["methods"].items()]
    return "\n".join(lines)
