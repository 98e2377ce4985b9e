"""`facevid encode` / `facevid decode`: a clip ↔ an .fvl file of content + motion codes."""

from __future__ import annotations

import os
import struct
import time as clock
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facevid.errors import ConfigError, InputError, NoFaceError
from facevid.face.crop import CropSpec, crop_mask, cut_crop, paste_back
from facevid.io.arrays import to_tensor, to_uint8
from facevid.io.fvl import FvlFrame, FvlHeader, FvlWriter, read_fvl
from facevid.tasks.summary import TaskSummary


@dataclass(kw_only=True)
class CodecSummary(TaskSummary):
    input: str
    frames_without_face: int = 0
    bits_per_frame: int = 0
    motion_kbps: float = 0.0
    file_bytes: int = 0


def _clip(crops: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S, S, 3) uint8 crops → (1, T, 3, S, S) in [-1, 1] on `device`."""
    return to_tensor(np.stack(crops), crops[0].shape[0])[None].to(device)


def _spec(model) -> CropSpec:
    cfg = model.cfg
    return CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)


@torch.no_grad()
def encode(video: str | Path, output: str | Path, *, model=None, window: int = 16,
           aligner: str = "auto", face: int = 1, device: str = "cpu", allow_truncated: bool = False,
           force: bool = False, progress: bool = True) -> CodecSummary:
    """Track, crop and encode `video` into an .fvl file; prints nothing, returns sizes. `model`: a
    FaceVid loaded by `facevid.load_model`, or a weights name or file (default: the bundled one)."""
    from facevid.face.track import FaceTracker, make_backend
    from facevid.io.video import check_output_path, iter_frames, probe
    from facevid.progress import progress_bar
    from facevid.weights import as_model, sha256_of

    info = probe(video)
    out = check_output_path(output, force)
    if out.suffix != ".fvl":
        raise ConfigError(f"the output of encode must end in .fvl, got {out.name}")
    if window < 1:
        raise ConfigError(f"--window must be 1 or more, got {window}")
    model = as_model(model, device)
    weights_path = getattr(model, "weights_path", None)
    if weights_path is None:
        raise ConfigError("encode needs a model loaded from a weights file (its sha256 names it in the .fvl)")
    spec = _spec(model)
    tracker = FaceTracker(make_backend(aligner), spec, face=face)
    summary = CodecSummary(input=str(video), output=str(out))
    started = clock.perf_counter()
    writer, pending, last, reference = None, [], None, None
    try:
        with progress_bar("encode", info.frame_count, enabled=progress) as advance:
            for frame in iter_frames(video, allow_truncated=allow_truncated):
                tracked = tracker.update(frame.image, frame.index, frame.time)
                if tracked.found:
                    last = cut_crop(frame.image, tracked.transform, spec.size)
                    if writer is None:   # the first face is the reference: motion is the change from it
                        writer = _open_writer(out, model, _model_name(model.weights_name), weights_path, info,
                                              last, sha256_of)
                        reference = _clip([last], model.device)[:, 0]
                else:
                    summary.frames_without_face += 1
                pending.append((frame.time, tracked.found, tracked.transform, last))
                summary.frames += 1
                advance(1)
                if writer is not None and len(pending) >= window:
                    _flush(model, writer, pending, reference)
            if writer is None:
                raise NoFaceError(tracker.not_found(f"{video} ({summary.frames} frames)"))
            _flush(model, writer, pending, reference)
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    summary.bits_per_frame = writer.header.bits_per_frame
    summary.motion_kbps = summary.bits_per_frame * float(info.fps) / 1000
    summary.file_bytes = out.stat().st_size
    summary.finish(started)
    return summary


def _open_writer(out, model, name, weights_path, info, reference, sha256_of) -> FvlWriter:
    cfg = model.cfg
    png = cv2.imencode(".png", cv2.cvtColor(reference, cv2.COLOR_RGB2BGR))[1].tobytes()
    clip = _clip([reference], model.device)
    encoded = model.encode(clip, clip[:, 0])
    header = FvlHeader(model=name, model_sha256=sha256_of(weights_path), fps=info.fps,
                       crop_size=cfg.out_size, crop_margin=cfg.crop_margin, crop_center_y=cfg.crop_center_y,
                       groups=cfg.vq_groups, codebook=cfg.vq_codebook,
                       content_shape=(cfg.content_tokens, cfg.enc_dim), motion_dim=cfg.motion_dim,
                       source_size=(info.width, info.height), flow_components=cfg.flow_code,
                       flow_bits=cfg.flow_code_bits if cfg.flow_code else 0)
    return FvlWriter(out, header, png, encoded.content[0].cpu().numpy(),
                     encoded.motion[0, 0, :cfg.motion_dim].cpu().numpy())


def _model_name(name: str) -> str:
    """The name an .fvl file shows for its weights (the registry name or the file's stem, never a
    path), printable and short."""
    from facevid.io.fvl import MAX_NAME

    return "".join(c if c.isprintable() else "?" for c in name)[:MAX_NAME] or "weights"


def _flush(model, writer: FvlWriter, pending: list, reference: torch.Tensor) -> None:
    """Encode the pending frames relative to the reference crop (1, 3, S, S) (frames before
    the first face reuse the first face crop)."""
    if not pending:
        return
    first = next(crop for *_, crop in pending if crop is not None)
    crops = [crop if crop is not None else first for *_, crop in pending]
    codes = model.encode(_clip(crops, model.device), reference).codes[0].cpu().numpy()
    for (time_s, found, transform, _), frame_codes in zip(pending, codes):
        matrix = transform if found else np.zeros((2, 3))
        writer.write(FvlFrame(time_s, found, matrix, frame_codes))
    pending.clear()


@torch.no_grad()
def decode(fvl: str | Path, output: str | Path, *, model=None, background: str | Path | None = None,
           steps: int | None = None, seed: int = 0, window: int = 16, device: str = "cpu",
           allow_truncated: bool = False, codec: str = "libx264", crf: int = 18, force: bool = False,
           progress: bool = True) -> CodecSummary:
    """Rebuild the clip of an .fvl file: the crops, or pasted back into `background`. `model`: the
    weights the file was encoded with (a loaded FaceVid, a name or a file); by default the
    registry entry with the sha256 the file names."""
    from facevid.io.video import VideoWriter, check_crf, check_output_path, iter_frames, probe
    from facevid.progress import progress_bar
    from facevid.weights import check_device, load_weights

    if window < 1:
        raise ConfigError(f"--window must be 1 or more, got {window}")
    check_crf(codec, crf)
    out = check_output_path(output, force)
    _refuse_inputs(out, fvl, background)
    data = read_fvl(fvl)
    if background is not None:
        size = probe(background)
        if (size.width, size.height) != tuple(data.header.source_size):
            raise InputError(f"the background is {size.width}x{size.height} but {fvl} was encoded from a "
                             f"{data.header.source_size[0]}x{data.header.source_size[1]} video")
    if model is None or isinstance(model, (str, Path)):   # the file found (and verified) once, then loaded
        model = load_weights(_decode_weights(data.header, fvl, model), check_device(device))
    else:
        _check_sha256(data.header, fvl, model)
    cfg, on = model.cfg, model.device
    _check_model(data.header, cfg, fvl)
    reference = _reference_crop(data.reference_png, cfg.out_size, fvl)
    ref = _clip([reference], on)[:, 0]                                              # (1, 3, S, S)
    content = torch.from_numpy(data.content)[None].to(on)
    ref_motion = torch.from_numpy(data.ref_motion)[None].to(on)
    ref_points = model.keypoints(ref)
    generator = torch.Generator(on).manual_seed(seed)
    backgrounds = iter_frames(background, allow_truncated=allow_truncated) if background is not None else None
    mask = crop_mask(cfg.out_size, "face")
    summary = CodecSummary(input=str(fvl), output=str(out), bits_per_frame=data.header.bits_per_frame)
    started = clock.perf_counter()
    with VideoWriter(out, data.header.fps, audio_from=background, codec=codec, crf=crf, force=force) as writer, \
            progress_bar("decode", len(data.frames), enabled=progress) as advance:
        for start in range(0, len(data.frames), window):
            chunk = data.frames[start:start + window]
            codes = torch.from_numpy(np.stack([f.codes for f in chunk]))[None].to(on)
            motion = model.motion_from_codes(codes)
            crops = model.decode(ref, ref_points, ref_motion, motion, content, generator=generator,
                                 steps=cfg.sample_steps if steps is None else steps)[0]
            for frame, crop in zip(chunk, crops):
                image = to_uint8(crop)
                if backgrounds is not None:
                    bg = next(backgrounds, None)
                    if bg is None:
                        raise InputError(f"the background {background} has fewer frames than {fvl}")
                    image = paste_back(bg.image, image, frame.transform, mask=mask) if frame.has_face else bg.image
                writer.write(image, frame.time)
                summary.frames += 1
                summary.frames_without_face += not frame.has_face
                advance(1)
    summary.finish(started)
    summary.file_bytes = out.stat().st_size
    return summary


def _refuse_inputs(out: Path, *inputs) -> None:
    """ConfigError if the output is (or resolves to) one of the inputs."""
    for source in filter(None, inputs):
        source = Path(source)
        same = out.exists() and source.exists() and os.path.samefile(out, source)
        if same or out.resolve() == source.resolve():
            raise ConfigError("the output must not be one of the inputs")


def _check_sha256(header: FvlHeader, fvl, model) -> None:
    """InputError unless `model` was loaded from the weights the file names."""
    from facevid.weights import sha256_of

    path = getattr(model, "weights_path", None)
    if path is None or sha256_of(path) != header.model_sha256:
        raise InputError(f"{fvl} was encoded with other weights ({header.model}, sha256 {header.model_sha256[:12]}); "
                         f"pass them with --weights")


def _decode_weights(header: FvlHeader, fvl, weights: str | None) -> Path:
    """The weights file to decode with: `weights` if its sha256 matches, else the registry entry that does."""
    from facevid.weights import registry, resolve, sha256_of, verify

    short = header.model_sha256[:12]
    if weights is not None:
        path = resolve(weights)
        if sha256_of(path) != header.model_sha256:
            raise InputError(f"{fvl} was encoded with other weights ({header.model}, sha256 {short}); "
                             f"pass them with --weights")
        return path
    for entry in registry().values():
        if entry.sha256.lower() == header.model_sha256:
            verify(entry)
            return entry.path
    raise InputError(f"{fvl} was encoded with weights {header.model} (sha256 {short}) that are not installed; "
                     f"pass them with --weights")


def _check_model(header: FvlHeader, cfg, fvl) -> None:
    """InputError unless the file's code layout and sizes are the model's."""
    expected = {"groups": cfg.vq_groups, "codebook": cfg.vq_codebook, "motion_dim": cfg.motion_dim,
                "crop_size": cfg.out_size, "content_shape": (cfg.content_tokens, cfg.enc_dim),
                "flow_components": cfg.flow_code, "flow_bits": cfg.flow_code_bits if cfg.flow_code else 0}
    for key, want in expected.items():
        got = getattr(header, key)
        if (tuple(got) if isinstance(got, (tuple, list)) else got) != want:
            raise InputError(f"{fvl} does not fit its weights: its {key} is {got}, the model's is {want}")


def _reference_crop(png: bytes, size: int, fvl) -> np.ndarray:
    """The reference crop (size, size, 3) uint8 RGB; InputError unless the PNG is exactly that."""
    what = f"{fvl} has a broken reference crop (not a {size}x{size} 8-bit RGB PNG)"
    if len(png) < 33 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR" \
            or struct.unpack(">II", png[16:24]) != (size, size):
        raise InputError(what)
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)   # a corrupt PNG: our one line, not OpenCV's warnings
    try:
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        logging.setLogLevel(level)
    if image is None or image.shape != (size, size, 3) or image.dtype != np.uint8:
        raise InputError(what)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
