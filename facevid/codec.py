"""`facevid encode` / `facevid decode`: a clip ↔ an .fvl file of content + motion codes."""

from __future__ import annotations

import time as clock
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facevid.crop import CropSpec, crop_mask, cut_crop, paste_back
from facevid.data import to_tensor
from facevid.errors import ConfigError, InputError, NoFaceError
from facevid.fvl import FvlFrame, FvlHeader, FvlWriter, read_fvl
from facevid.report import to_uint8


@dataclass
class CodecSummary:
    input: str
    output: str
    frames: int = 0
    frames_without_face: int = 0
    bits_per_frame: int = 0
    motion_kbps: float = 0.0
    file_bytes: int = 0
    seconds: float = 0.0
    fps: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def _clip(crops: list[np.ndarray]) -> torch.Tensor:
    """(T, S, S, 3) uint8 crops → (1, T, 3, S, S) in [-1, 1]."""
    return to_tensor(np.stack(crops), crops[0].shape[0])[None]


def _spec(model) -> CropSpec:
    cfg = model.cfg
    return CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)


@torch.no_grad()
def encode(video: str | Path, output: str | Path, *, weights: str | None = None, window: int = 16,
           aligner: str = "auto", force: bool = False, progress: bool = True) -> CodecSummary:
    """Track, crop and encode `video` into an .fvl file; prints nothing, returns sizes."""
    from facevid.face import FaceTracker, make_backend
    from facevid.progress import progress_bar
    from facevid.video import check_output_path, iter_frames, probe
    from facevid.weights import load_model, resolve, sha256_of

    info = probe(video)
    out = check_output_path(output, force)
    if out.suffix != ".fvl":
        raise ConfigError(f"the output of encode must end in .fvl, got {out.name}")
    weights_path = resolve(weights)
    model = load_model(weights_path)
    spec = _spec(model)
    tracker = FaceTracker(make_backend(aligner), spec)
    summary = CodecSummary(str(video), str(out))
    started = clock.perf_counter()
    writer, pending, last, reference = None, [], None, None
    try:
        with progress_bar("encode", info.frame_count, enabled=progress) as advance:
            for frame in iter_frames(video):
                face = tracker.update(frame.image, frame.index, frame.time)
                if face.found:
                    last = cut_crop(frame.image, face.transform, spec.size)
                    if writer is None:   # the first face is the reference: motion is the change from it
                        writer = _open_writer(out, model, weights, weights_path, info, last, sha256_of)
                        reference = _clip([last])[:, 0]
                else:
                    summary.frames_without_face += 1
                pending.append((frame.time, face.found, face.transform, last))
                summary.frames += 1
                advance(1)
                if writer is not None and len(pending) >= window:
                    _flush(model, writer, pending, reference)
            if writer is None:
                raise NoFaceError(f"no face found in any of the {summary.frames} frames of {video}")
            _flush(model, writer, pending, reference)
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    summary.bits_per_frame = writer.header.bits_per_frame
    summary.motion_kbps = summary.bits_per_frame * float(info.fps) / 1000
    summary.file_bytes = out.stat().st_size
    summary.seconds = clock.perf_counter() - started
    summary.fps = summary.frames / max(summary.seconds, 1e-9)
    return summary


def _open_writer(out, model, name, weights_path, info, reference, sha256_of) -> FvlWriter:
    cfg = model.cfg
    png = cv2.imencode(".png", cv2.cvtColor(reference, cv2.COLOR_RGB2BGR))[1].tobytes()
    clip = _clip([reference])
    encoded = model.encode(clip, clip[:, 0])
    header = FvlHeader(model=str(name or "small"), model_sha256=sha256_of(weights_path), fps=info.fps,
                       crop_size=cfg.out_size, crop_margin=cfg.crop_margin, crop_center_y=cfg.crop_center_y,
                       groups=cfg.vq_groups, codebook=cfg.vq_codebook,
                       content_shape=(cfg.content_tokens, cfg.enc_dim), motion_dim=cfg.motion_dim,
                       source_size=(info.width, info.height), flow_components=cfg.flow_code,
                       flow_bits=cfg.flow_code_bits if cfg.flow_code else 0)
    return FvlWriter(out, header, png, encoded.content[0].numpy(), encoded.motion[0, 0, :cfg.motion_dim].numpy())


def _flush(model, writer: FvlWriter, pending: list, reference: torch.Tensor) -> None:
    """Encode the pending frames relative to the reference crop (1, 3, S, S) (frames before
    the first face reuse the first face crop)."""
    if not pending:
        return
    first = next(crop for *_, crop in pending if crop is not None)
    crops = [crop if crop is not None else first for *_, crop in pending]
    codes = model.encode(_clip(crops), reference).codes[0].numpy()
    for (time_s, found, transform, _), frame_codes in zip(pending, codes):
        matrix = transform if found else np.zeros((2, 3))
        writer.write(FvlFrame(time_s, found, matrix, frame_codes))
    pending.clear()


@torch.no_grad()
def decode(fvl: str | Path, output: str | Path, *, weights: str | None = None, background: str | Path | None = None,
           steps: int | None = None, seed: int = 0, window: int = 16, force: bool = False,
           progress: bool = True) -> CodecSummary:
    """Rebuild the clip of an .fvl file: the crops, or pasted back into `background`."""
    from facevid.progress import progress_bar
    from facevid.video import VideoWriter, check_output_path, iter_frames, probe
    from facevid.weights import load_model, resolve, sha256_of

    data = read_fvl(fvl)
    out = check_output_path(output, force)
    if background is not None:
        size = probe(background)
        if (size.width, size.height) != tuple(data.header.source_size):
            raise InputError(f"the background is {size.width}x{size.height} but {fvl} was encoded from a "
                             f"{data.header.source_size[0]}x{data.header.source_size[1]} video")
    weights_path = resolve(weights or data.header.model)
    if sha256_of(weights_path) != data.header.model_sha256:
        raise InputError(f"{fvl} was encoded with other weights ({data.header.model}); pass them with --weights")
    model = load_model(weights_path)
    cfg = model.cfg
    reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(data.reference_png, np.uint8), cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB)
    ref = torch.from_numpy(reference).permute(2, 0, 1).float()[None] / 127.5 - 1
    content = torch.from_numpy(data.content)[None]
    ref_motion = torch.from_numpy(data.ref_motion)[None]
    ref_points = model.keypoints(ref)
    generator = torch.Generator().manual_seed(seed)
    backgrounds = iter_frames(background) if background is not None else None
    mask = crop_mask(cfg.out_size, "face")
    summary = CodecSummary(str(fvl), str(out), bits_per_frame=data.header.bits_per_frame)
    started = clock.perf_counter()
    with VideoWriter(out, data.header.fps, audio_from=background, force=force) as writer, \
            progress_bar("decode", len(data.frames), enabled=progress) as advance:
        for start in range(0, len(data.frames), window):
            chunk = data.frames[start:start + window]
            codes = torch.from_numpy(np.stack([f.codes for f in chunk]))[None]
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
    summary.seconds = clock.perf_counter() - started
    summary.fps = summary.frames / max(summary.seconds, 1e-9)
    summary.file_bytes = out.stat().st_size
    return summary
