"""Training of the mouth refiner (facevid.model.mouth) on what the model makes of real clips.

The refiner learns to finish the model's own output, so its inputs are made by the model:
each clip is cut into segments, each segment's first frame animated by the segment itself
(self-reenactment, as `facevid eval` and `transfer` drive it, at the model's sampler steps),
and the output kept beside the real frame it should have been.

A data folder holds uint8 arrays at the model's out_size: outputs.npy and targets.npy
(N, S, S, 3), sources.npy (M, S, S, 3), and meta.npz: source (N,) index of each frame's
source, marks (N, 68, 2) and source_marks (M, 68, 2) landmarks in crop pixels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facevid.errors import InputError

SEGMENT = 64   # frames a source animates: the reference drifts no further than eval's clips


def build(model, clips, out_dir: str | Path, *, segment: int = SEGMENT, progress: bool = True) -> int:
    """Animate every segment of `clips` (facevid.train.batches.Clip) with `model`, write the arrays to
    `out_dir` (atomically: a half-written folder is never read) and return the frame count."""
    from facevid.eval.reenactment import clip_at, reenact
    from facevid.io.atomic import atomic_dir
    from facevid.progress import progress_bar

    with atomic_dir(out_dir) as tmp:
        return _build_into(tmp, model, clips, segment, progress, clip_at, reenact, progress_bar)


def _build_into(tmp: Path, model, clips, segment: int, progress: bool, clip_at, reenact, progress_bar) -> int:
    size = model.cfg.out_size
    total = sum(len(c.frames) // segment * segment or len(c.frames) for c in clips)
    arrays = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.uint8,
                                              shape=(total, size, size, 3)) for name in ("outputs", "targets")}
    sources, source_marks, index, marks = [], [], [], []
    done = 0
    with progress_bar("mouth data", total, enabled=progress) as advance:
        for clip in clips:
            real, points = clip_at(clip, size, len(clip.frames))
            for start in range(0, max(len(real) - segment + 1, 1), segment):
                part, part_marks = real[start:start + segment], points[start:start + segment]
                fake = reenact(model, part[0], part, marks=(part_marks[0], part_marks))
                n = len(part)
                arrays["outputs"][done:done + n] = fake
                arrays["targets"][done:done + n] = part
                index += [len(sources)] * n
                sources.append(part[0])
                source_marks.append(part_marks[0])
                marks.append(part_marks)
                done += n
                advance(n)
    for array in arrays.values():
        array.flush()
    np.save(tmp / "sources.npy", np.stack(sources))
    np.savez(tmp / "meta.npz", source=np.array(index, np.int32), marks=np.concatenate(marks).astype(np.float32),
             source_marks=np.stack(source_marks).astype(np.float32))
    (tmp / "info.json").write_text(json.dumps({"frames": done, "size": size, "segment": segment,
                                               "clips": [c.name for c in clips]}))
    if done != total:
        raise AssertionError(f"wrote {done} of {total} frames")
    return done


def load(data_dir: str | Path) -> dict:
    """The arrays of a folder written by `build` (images memory-mapped)."""
    data_dir = Path(data_dir)
    if not (data_dir / "info.json").exists():
        raise InputError(f"{data_dir} is not mouth training data (no info.json; `facevid train-mouth` makes it)")
    meta = np.load(data_dir / "meta.npz")
    data = {name: np.load(data_dir / f"{name}.npy", mmap_mode="r") for name in ("outputs", "targets", "sources")}
    data.update({name: meta[name] for name in ("source", "marks", "source_marks")})
    return data


@dataclass(frozen=True)
class MouthTrainConfig:
    """One run of `facevid train-mouth` (the rest of the model stays as it is)."""

    size: int | None = None         # the refiner's window side (ModelConfig.mouth_size); None: half out_size
    channels: tuple[int, ...] = (16, 32, 64, 128)   # its U-Net widths ((32, 64, 128): 2.3x the time
                                    # a step, (16, 64, 128): 1.8x)
    steps: int = 3000
    batch: int = 32
    lr: float = 1e-3                # AdamW, linear warmup then cosine decay to 5%
    warmup_steps: int = 100
    weight_decay: float = 0.01
    lip_weight: float = 4.0         # the L1 weighs the pixels near the target's lips this much more
    edge_weight: float = 0.5        # L1 of the image gradients (against the blur of a plain L1 mean)
    open_share: float = 0.6         # share of samples from frames whose mouth opens more than its source's
    point_noise: float = 0.006      # landmark noise (crop units): per point, and the whole mouth shifted
    flip_prob: float = 0.5
    colour_jitter: float = 0.1      # per-channel gain 1 ± this and an offset ± half of it, the same on all three
    val_every: int = 250            # steps between scores of the held-out windows; the best refiner is exported
    seed: int = 0


class Batches:
    """Random training batches of a data folder: (output, target, reference) images in [-1, 1]
    (N, 3, S, S) and landmarks (N, 68, 2) in crop units, flipped and noised as configured."""

    def __init__(self, data: dict, cfg: MouthTrainConfig, generator: np.random.Generator):
        self.data, self.cfg, self.rng = data, cfg, generator
        self.size = data["outputs"].shape[1]
        from facevid.eval.reenactment import MOUTH_OPENS, mouth_opening

        opens = mouth_opening(data["marks"]) - mouth_opening(data["source_marks"])[data["source"]] >= MOUTH_OPENS
        self.open, self.rest = np.flatnonzero(opens), np.flatnonzero(~opens)

    def indices(self, n: int) -> np.ndarray:
        pools = [p for p in (self.open, self.rest) if len(p)]
        chosen = self.rng.random(n) < self.cfg.open_share if len(pools) == 2 else np.zeros(n, bool)
        return np.where(chosen, self.rng.choice(pools[0], n), self.rng.choice(pools[-1], n))

    def sample(self, n: int | None = None, indices: np.ndarray | None = None, augment: bool = True) -> dict:
        from facevid.face.landmarks import FLIP_68
        from facevid.io.arrays import points_to_unit, to_tensor

        d, size = self.data, self.size
        idx = np.sort(self.indices(n or self.cfg.batch) if indices is None else indices)
        src = d["source"][idx]
        batch = {"output": to_tensor(d["outputs"][idx], size), "target": to_tensor(d["targets"][idx], size),
                 "reference": to_tensor(d["sources"][src], size),
                 "points": torch.from_numpy(points_to_unit(d["marks"][idx], size)),
                 "ref_points": torch.from_numpy(points_to_unit(d["source_marks"][src], size))}
        if not augment:
            return batch
        flip = torch.from_numpy(self.rng.random(len(idx)) < self.cfg.flip_prob)
        jitter = self.cfg.colour_jitter
        gain = torch.from_numpy(1 + jitter * self.rng.uniform(-1, 1, (len(idx), 3, 1, 1))).float()
        offset = torch.from_numpy(jitter / 2 * self.rng.uniform(-1, 1, (len(idx), 1, 1, 1))).float()
        for key in ("output", "target", "reference"):
            image = torch.where(flip[:, None, None, None], batch[key].flip(-1), batch[key])
            batch[key] = ((image + 1) * gain - 1 + offset).clamp(-1, 1)
        for key in ("points", "ref_points"):
            mirrored = batch[key][:, FLIP_68] * torch.tensor([-1.0, 1.0])
            noise = self.cfg.point_noise * torch.from_numpy(
                self.rng.standard_normal((len(idx), 68, 2)) + self.rng.standard_normal((len(idx), 1, 2))).float()
            batch[key] = torch.where(flip[:, None, None], mirrored, batch[key]) + noise
        return batch


def window_loss(refiner, batch: dict, cfg: MouthTrainConfig) -> tuple[torch.Tensor, dict]:
    """Weighted L1 (+ gradient L1) of the refined window against the real frame's window."""
    from facevid.model.mouth import cut

    x, boxes = refiner.inputs(batch["output"], batch["reference"], batch["ref_points"], batch["points"])
    made = x[:, :3] + refiner.correction(x)
    real = cut(batch["target"], boxes, refiner.size)
    near_lips = F.max_pool2d(x[:, 6:7], 9, stride=1, padding=4)      # the target's outer lips, dilated
    weight = 1 + cfg.lip_weight * near_lips
    loss = (weight * (made - real).abs()).mean() / weight.mean()

    def grads(image):
        return image[..., 1:, :] - image[..., :-1, :], image[..., :, 1:] - image[..., :, :-1]

    edges = sum((a - b).abs().mean() for a, b in zip(grads(made), grads(real)))
    with torch.no_grad():
        def psnr(image):
            mse = (weight * (image.clamp(-1, 1) - real) ** 2).mean((1, 2, 3)) / weight.mean((1, 2, 3))
            return (10 * torch.log10(4 / mse.clamp(min=1e-10))).mean().item()
        metrics = {"psnr": psnr(made), "psnr_before": psnr(x[:, :3])}
    return loss + cfg.edge_weight * edges, metrics


CHECKPOINT = "mouth_checkpoint.pt"


def attach(model, refiner):
    """A FaceVid like `model` whose mouth refiner is `refiner` (the config says its size)."""
    from dataclasses import replace

    from facevid.model.facevid import FaceVid

    out = FaceVid(replace(model.cfg, mouth_size=refiner.size, mouth_channels=refiner.channels))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mouth.")}
    out.load_state_dict(state, strict=False)
    out.mouth.load_state_dict(refiner.state_dict())
    return out.eval()


def train_refiner(weights: str | Path, data_dir: str | Path, output: str | Path, cfg: MouthTrainConfig, *,
                  run_dir: str | Path, max_minutes: float | None = None, val_dir: str | Path | None = None,
                  device: str = "cpu", log=print) -> dict:
    """Train a mouth refiner on a data folder (`build`) for the model in `weights`, resuming
    `run_dir`'s checkpoint if there is one, and write the model with it to `output`."""
    import time

    from facevid.io.atomic import make_folder
    from facevid.model.mouth import MouthRefiner
    from facevid.weights import export_weights, load_weights, weights_metadata

    model = load_weights(weights)
    data, val = load(data_dir), (load(val_dir) if val_dir else None)
    if data["outputs"].shape[1] != model.cfg.out_size:
        raise InputError(f"{data_dir} holds {data['outputs'].shape[1]}-px crops, the model makes {model.cfg.out_size}")
    torch.manual_seed(cfg.seed)
    refiner = MouthRefiner(cfg.size or model.cfg.out_size // 2, cfg.channels).to(device)
    optimizer = torch.optim.AdamW([{"params": list(refiner.parameters()), "lr": cfg.lr, "base_lr": cfg.lr}],
                                  weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    run_dir = Path(run_dir)
    make_folder(run_dir, "run folder")
    step, history, state = _resume(run_dir, refiner, optimizer, rng)
    batches = Batches(data, cfg, rng)
    held_out = _on(_held_out_batch(val, cfg), device) if val is not None else None
    best = state.get("best") if step else None   # {"step", "psnr", "refiner"}: the best held-out score so far
    started, last_save = time.monotonic(), time.monotonic()
    while step < cfg.steps and not (max_minutes and time.monotonic() - started > max_minutes * 60):
        loss, metrics = _train_step(refiner, optimizer, _on(batches.sample(), device), cfg, step)
        step += 1
        if step % 50 == 0 or step == cfg.steps:
            record = {"step": step, "loss": loss, **metrics, "minutes": round((time.monotonic() - started) / 60, 2)}
            if held_out is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                best = _validate(refiner, held_out, cfg, step, record, best)
            history.append(record)
            log(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
        if time.monotonic() - last_save > 300 or step == cfg.steps:
            _save(run_dir, refiner, optimizer, rng, step, history, best)
            last_save = time.monotonic()
    _save(run_dir, refiner, optimizer, rng, step, history, best)
    chosen = step
    if best is not None:   # the refiner with the best held-out score (it overfits: 81 people's mouths)
        refiner.load_state_dict(best["refiner"])
        chosen = best["step"]
    export_weights(attach(model, refiner.cpu()), Path(output), {**weights_metadata(weights), "mouth_steps": chosen},
                   half=True)
    return {"steps": step, "exported_step": chosen, "output": str(output), "last": history[-1] if history else {}}


def _on(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _resume(run_dir: Path, refiner, optimizer, rng: np.random.Generator) -> tuple[int, list, dict]:
    """(step, history, checkpoint) of run_dir's checkpoint, loaded into refiner, optimizer and
    rng; (0, [], {}) without one."""
    from facevid.train.loop import load_checkpoint

    if not (run_dir / CHECKPOINT).exists():
        return 0, [], {}
    state = load_checkpoint(run_dir / CHECKPOINT)
    try:
        refiner.load_state_dict(state["refiner"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise InputError(f"{run_dir} holds a mouth refiner of other sizes; use another --run-dir") from error
    try:
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        return int(state["step"]), list(state["history"]), state
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{run_dir / CHECKPOINT} is not a mouth refiner checkpoint") from error


def _train_step(refiner, optimizer, batch: dict, cfg: MouthTrainConfig, step: int) -> tuple[float, dict]:
    """One optimizer step at step's learning rate (warm-up, then cosine decay to 5%)."""
    from facevid.train.loop import set_learning_rate

    set_learning_rate(optimizer, step, cfg.warmup_steps)
    decay = 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(step / cfg.steps, 1)))
    for group in optimizer.param_groups:
        group["lr"] *= decay
    loss, metrics = window_loss(refiner, batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
    optimizer.step()
    return loss.item(), metrics


def _validate(refiner, held_out: dict, cfg: MouthTrainConfig, step: int, record: dict, best: dict | None) -> dict:
    """Score the held-out batch into `record`; the best refiner so far (this one if it scores higher)."""
    with torch.no_grad():
        _, held = window_loss(refiner, held_out, cfg)
    record.update(val_psnr=held["psnr"], val_psnr_before=held["psnr_before"])
    if best is None or held["psnr"] > best["psnr"]:
        best = {"step": step, "psnr": held["psnr"], "refiner": {k: v.clone() for k, v in refiner.state_dict().items()}}
    return best


def _held_out_batch(val: dict, cfg: MouthTrainConfig) -> dict:
    """128 held-out windows spread over the frames whose mouth opens (all frames if none does)."""
    batches = Batches(val, cfg, np.random.default_rng(1))
    pool = batches.open if len(batches.open) else batches.rest
    return batches.sample(indices=pool[np.linspace(0, len(pool) - 1, 128).astype(int)], augment=False)


def _save(run_dir: Path, refiner, optimizer, rng, step: int, history: list, best: dict | None) -> None:
    from facevid.train.loop import atomic_torch_save

    atomic_torch_save({"refiner": refiner.state_dict(), "optimizer": optimizer.state_dict(),
                       "rng": rng.bit_generator.state, "step": step, "history": history, "best": best},
                      run_dir / CHECKPOINT)


def train_mouth(weights: str | Path | None, data, output: str | Path, *, run_dir: str | Path,
                cfg: MouthTrainConfig = MouthTrainConfig(), holdout: tuple[str, ...] = (),
                max_minutes: float | None = None, device: str = "cpu", force: bool = False, progress: bool = True,
                log=print) -> dict:
    """`facevid train-mouth`: the model's outputs on `data` (prepared caches and/or folders of
    videos, outside the `holdout` identities; made once, in run_dir/data), then a mouth refiner
    trained on them (resumable), written with the model to `output`. Clips of the held-out
    identities in the caches, if any, make run_dir/val, scored as training goes."""
    from facevid.config import TrainConfig
    from facevid.io.cache import load_cache
    from facevid.io.writer import check_output_path
    from facevid.train.loop import resolve_clips
    from facevid.weights import resolve

    output, run_dir = check_output_path(output, force), Path(run_dir)
    if output.suffix != ".safetensors":
        raise InputError(f"output {output} must be a .safetensors file")
    weights = resolve(weights)
    from facevid.io.atomic import make_folder
    from facevid.train.loop import load_checkpoint
    from facevid.weights import check_device, load_weights

    if (run_dir / CHECKPOINT).exists():   # a resume checkpoint is checked before any work
        load_checkpoint(run_dir / CHECKPOINT)
    model = load_weights(weights, check_device(device))
    model.mouth = None   # the refiner learns to finish what the model makes without one
    make_folder(run_dir, "run folder")
    if not (run_dir / "data" / "info.json").exists():
        clips = resolve_clips(data, run_dir, TrainConfig(eval_identities=holdout, content_frames=1, target_frames=1),
                              model.cfg, progress)
        log(f"animating {len(clips)} clips for the refiner's training data")
        build(model, clips, run_dir / "data", progress=progress)
    val_dir = run_dir / "val"
    if holdout and not (val_dir / "info.json").exists():
        sources = [data] if isinstance(data, (str, Path)) else list(data)
        held = [c for s in map(Path, sources) if (s / "manifest.json").exists()
                for c in load_cache(s, include=set(holdout))]
        if held:
            build(model, held[:8], val_dir, progress=progress)
    return train_refiner(weights, run_dir / "data", output, cfg, run_dir=run_dir, max_minutes=max_minutes,
                         val_dir=val_dir if (val_dir / "info.json").exists() else None, device=str(model.device),
                         log=log)
