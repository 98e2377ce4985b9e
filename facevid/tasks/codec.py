"""`facevid encode` / `facevid decode`: a clip ↔ an .fvl file of content + motion codes."""

from __future__ import annotations

import os
import struct
import time as clock
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from facevid.errors import ConfigError, InputError, NoFaceError
from facevid.io.arrays import as_rgb
from facevid.io.fvl import FvlFrame, FvlHeader, FvlWriter, read_fvl
from facevid.pipeline import CodeDecoder, CodeEncoder, FaceFrame, Paster, crop_spec, track_faces, windows
from facevid.tasks.summary import TaskSummary


@dataclass(kw_only=True)
class CodecSummary(TaskSummary):
    input: str
    frames_without_face: int = 0
    bits_per_frame: int = 0
    motion_kbps: float = 0.0
    file_bytes: int = 0


@torch.no_grad()
def encode(video: str | Path, output: str | Path, *, model=None, window: int = 16,
           aligner: str = "auto", face: int = 1, device: str = "cpu", allow_truncated: bool = False,
           force: bool = False, progress: bool = True) -> CodecSummary:
    """Track, crop and encode `video` into an .fvl file; prints nothing, returns sizes. `model`: a
    FaceVid loaded by `facevid.load_model`, or a weights name or file (default: the bundled one)."""
    from facevid.face.track import FaceTracker, make_backend
    from facevid.io.video import iter_frames, probe
    from facevid.io.writer import check_output_path
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
    spec = crop_spec(model.cfg)
    tracker = FaceTracker(make_backend(aligner), spec, face=face)
    summary = CodecSummary(input=str(video), output=str(out))
    started = clock.perf_counter()
    writer = None

    def open_writer(encoder: CodeEncoder) -> None:   # at the first face: motion is the change from it
        nonlocal writer
        writer = _open_writer(out, model, encoder, info, sha256_of(weights_path))

    try:
        with progress_bar("encode", info.frame_count, enabled=progress) as advance:
            faces = track_faces(iter_frames(video, allow_truncated=allow_truncated), tracker, spec.size)
            for frame in _encoded(faces, model, window, open_writer):
                writer.write(frame)
                summary.frames += 1
                summary.frames_without_face += not frame.has_face
                advance(1)
            if writer is None:
                raise NoFaceError(tracker.not_found(f"{video} ({summary.frames} frames)"))
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


def _open_writer(out, model, encoder: CodeEncoder, info, sha256: str) -> FvlWriter:
    cfg = model.cfg
    png = cv2.imencode(".png", cv2.cvtColor(encoder.reference_crop, cv2.COLOR_RGB2BGR))[1].tobytes()
    header = FvlHeader(model=_model_name(model.weights_name), model_sha256=sha256, fps=info.fps,
                       crop_size=cfg.out_size, crop_margin=cfg.crop_margin, crop_center_y=cfg.crop_center_y,
                       groups=cfg.vq_groups, codebook=cfg.vq_codebook,
                       content_shape=(cfg.content_tokens, cfg.enc_dim), motion_dim=cfg.motion_dim,
                       source_size=(info.width, info.height), flow_components=cfg.flow_code,
                       flow_bits=cfg.flow_code_bits if cfg.flow_code else 0)
    return FvlWriter(out, header, png, encoder.content, encoder.ref_motion)


def _model_name(name: str) -> str:
    """The name an .fvl file shows for its weights (the registry name or the file's stem, never a
    path), printable and short."""
    from facevid.io.fvl import MAX_NAME

    return "".join(c if c.isprintable() else "?" for c in name)[:MAX_NAME] or "weights"


def _encoded(faces: Iterable[FaceFrame], model, window: int,
             on_reference: Callable[[CodeEncoder], None] = lambda encoder: None) -> Iterator[FvlFrame]:
    """The .fvl frames of tracked faces, encoded a window at a time relative to the first face
    (`on_reference` is told it before the first frame comes; frames before it take its crop).
    No frame comes if no face is ever found."""
    encoder, pending = None, []
    for chunk in windows(faces, window):
        pending += chunk
        if encoder is None:
            first = next((f for f in pending if f.found), None)
            if first is None:
                continue
            encoder = CodeEncoder(model, first.crop)
            on_reference(encoder)
        codes = encoder([f.crop if f.crop is not None else encoder.reference_crop for f in pending])
        for f, frame_codes in zip(pending, codes):
            yield FvlFrame(f.time, f.found, f.transform if f.found else np.zeros((2, 3)), frame_codes)
        pending = []


@torch.no_grad()
def decode(fvl: str | Path, output: str | Path, *, model=None, background: str | Path | None = None,
           steps: int | None = None, seed: int = 0, sampler: str = "heun", window: int = 16, device: str = "cpu",
           allow_truncated: bool = False, codec: str = "libx264", crf: int = 18, force: bool = False,
           progress: bool = True) -> CodecSummary:
    """Rebuild the clip of an .fvl file: the crops, or pasted back into `background`. `model`: the
    weights the file was encoded with (a loaded FaceVid, a name or a file); by default the
    registry entry with the sha256 the file names."""
    from facevid.io.video import iter_frames, probe
    from facevid.io.writer import VideoWriter, check_crf, check_output_path
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
    _check_model(data.header, model.cfg, fvl)
    render = CodeDecoder(model, _reference_crop(data.reference_png, model.cfg.out_size, fvl), data.content,
                         data.ref_motion, steps=steps, seed=seed, sampler=sampler)
    backgrounds = None
    if background is not None:
        backgrounds = (f.image for f in iter_frames(background, allow_truncated=allow_truncated))
    summary = CodecSummary(input=str(fvl), output=str(out), bits_per_frame=data.header.bits_per_frame)
    started = clock.perf_counter()
    with VideoWriter(out, data.header.fps, audio_from=background, codec=codec, crf=crf, force=force) as writer, \
            progress_bar("decode", len(data.frames), enabled=progress) as advance:
        images = _decoded(render, data.frames, window, backgrounds, f"the background {background}", fvl)
        for frame, image in zip(data.frames, images):
            writer.write(image, frame.time)
            summary.frames += 1
            summary.frames_without_face += not frame.has_face
            advance(1)
    summary.finish(started)
    summary.file_bytes = out.stat().st_size
    return summary


def _decoded(render: CodeDecoder, frames: list[FvlFrame], window: int, backgrounds: Iterator[np.ndarray] | None,
             background: str = "the background", what: str = "the codes") -> Iterator[np.ndarray]:
    """The decoded crops, a window at a time, or pasted back into the next background frames."""
    paste = Paster(render.model.cfg.out_size, colour_match=False)
    for chunk in windows(frames, window):
        for frame, image in zip(chunk, render(np.stack([f.codes for f in chunk]))):
            if backgrounds is not None:
                bg = next(backgrounds, None)
                if bg is None:
                    raise InputError(f"{background} has fewer frames than {what}")
                image = paste(bg, image, frame.transform if frame.has_face else None)
            yield image


@dataclass
class Codes:
    """A clip as the codec holds it (what an .fvl file stores): the reference face crop, its
    content and motion, and one `FvlFrame` per frame (time, face found, frame→crop transform,
    the motion codes)."""

    reference: np.ndarray       # (S, S, 3) uint8 RGB: the first face's crop
    content: np.ndarray         # (K, E) float32
    ref_motion: np.ndarray      # (motion_dim,) float32
    frames: list[FvlFrame]

    @property
    def codes(self) -> np.ndarray:
        """(T, G [+ C]) the frames' codes."""
        return np.stack([f.codes for f in self.frames])


def read_codes(fvl: str | Path) -> Codes:
    """An .fvl file as `Codes` (for decode_frames), every field checked as decode checks it."""
    data = read_fvl(fvl)
    return Codes(_reference_crop(data.reference_png, data.header.crop_size, fvl), data.content, data.ref_motion,
                 data.frames)


def encode_frames(frames: Iterable[np.ndarray], *, model=None, fps: float = 25.0, window: int = 16,
                  aligner: str = "auto", face: int = 1, device: str = "cpu") -> Codes:
    """The frame-level encode: frames (H, W, 3) uint8 RGB in, their codes out (a few hundred
    bits a frame; `fps` sets the frames' times). NoFaceError if no frame shows a face."""
    from facevid.face.track import FaceTracker, make_backend
    from facevid.io.video import Frame
    from facevid.weights import as_model

    model = as_model(model, device)
    tracker = FaceTracker(make_backend(aligner), crop_spec(model.cfg), face=face)
    found: list[CodeEncoder] = []
    video = (Frame(i, i / fps, as_rgb(image)) for i, image in enumerate(frames))
    coded = list(_encoded(track_faces(video, tracker, model.cfg.out_size), model, window, found.append))
    if not found:
        raise NoFaceError(tracker.not_found(f"the frames ({len(coded)})"))
    return Codes(found[0].reference_crop, found[0].content, found[0].ref_motion, coded)


def decode_frames(codes: Codes, *, model=None, backgrounds: Iterable[np.ndarray] | None = None,
                  steps: int | None = None, seed: int = 0, sampler: str = "heun", window: int = 16,
                  device: str = "cpu") -> Iterator[np.ndarray]:
    """The frame-level decode: the crops the codes rebuild, or each pasted back into the next of
    `backgrounds` (frames of the size the clip had), lazily."""
    from facevid.weights import as_model

    model = as_model(model, device)
    render = CodeDecoder(model, codes.reference, codes.content, codes.ref_motion, steps=steps, seed=seed,
                         sampler=sampler)
    yield from _decoded(render, codes.frames, window, None if backgrounds is None else map(as_rgb, backgrounds))


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
