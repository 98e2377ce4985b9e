"""The `facevid` command line: one thin function per subcommand (Typer).

Each command parses, calls one library function, prints, and exits. Errors from the
library (FacevidError) and from the command line become one line on stderr and exit 1
(2 for usage errors); there are no tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from facevid import __version__
from facevid.config import DEFAULT_MOTION, RENDER_SIZE
from facevid.errors import ConfigError, FacevidError, FacevidWarning, Interrupted

_default_showwarning = warnings.showwarning

EXAMPLES = """
Examples:

  facevid transfer face.png drive.mp4 -o out.mp4

  facevid encode talk.mp4 -o talk.fvl && facevid decode talk.fvl -o recon.mp4 --background talk.mp4

  facevid track talk.mp4 -o tracked.mp4 --crops crops.mp4 --json > track.json

  facevid train ./my_videos -o runs/me --preset small --max-minutes 60
"""

app = typer.Typer(name="facevid", help="Edit and generate talking-face video." + EXAMPLES,
                  add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})


def _version(value: bool):
    if value:
        print(f"facevid {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Edit and generate talking-face video."""


ALLOW_TRUNCATED_HELP = "Keep what decodes of a video that ends early or is damaged (warns); default: an error."

# Options every command that has them shares (declared once; a command with its own wording keeps its own).
FORCE = typer.Option(False, "--force", "-f", help="Overwrite an existing output.")
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bar, no summary line.")
AS_JSON = typer.Option(False, "--json", help="Print a JSON summary.")
DEVICE = typer.Option("cpu", "--device", help="cpu or cuda.")
WEIGHTS = typer.Option(None, "--weights", help="Weights: a name in weights.toml (default: small) or a file.")
ALLOW_TRUNCATED = typer.Option(False, "--allow-truncated", help=ALLOW_TRUNCATED_HELP)
ALIGNER = typer.Option("auto", help="Landmark backend: auto, dlib or face-alignment.")
CODEC = typer.Option("libx264", "--codec", help="Video codec: libx264, libx265, libvpx-vp9, libsvtav1.")
CRF = typer.Option(18, "--crf", help="Constant rate factor (quality; lower is better).")
WINDOW = typer.Option(16, "--window", help="Frames per batch (memory is bounded by it).")
STEPS = typer.Option(None, "--steps", help="Sampler steps (0: warp only, 1: the mean, default: the model's).")
SAMPLER = typer.Option("heun", "--sampler", help="With --steps 2 or more: heun (EDM's), euler or dpm++ (diffusers' "
                                                 "EDM schedulers).")


def _fail(message: str, code: int = 1):
    print(f"facevid: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def _friendly(command):
    """Run a command; library errors become one line and exit 1, Ctrl-C exits 130, SIGTERM 143."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FacevidError as error:
            _fail(str(error))
        except Interrupted:
            _fail("terminated (no output was written)", 143)
        except KeyboardInterrupt:
            _fail("interrupted (no output was written)", 130)
        except OSError as error:   # a file system refusal the library did not word itself
            where = f" {error.filename}" if error.filename else ""
            _fail(f"cannot write or read{where}: {error.strerror or error}")
    return run


def _terminate(signum, frame):
    """SIGTERM becomes an exception, so outputs' temp files are removed on the way out."""
    raise Interrupted()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, FacevidWarning):
        print(f"facevid: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


@app.command(epilog="Example: facevid track talk.mp4 -o tracked.mp4 --crops crops.mp4 --json > track.json")
@_friendly
def track(
    video: Path = typer.Argument(..., help="Input video (or image)."),
    output: Path = typer.Option(..., "-o", "--output", help="Video with the tracked face drawn."),
    crops: Optional[Path] = typer.Option(None, "--crops", help="Also write the aligned crop stream here."),
    aligner: str = ALIGNER,
    face: int = typer.Option(1, "--face", help="Which face to follow: 1 = largest, 2 = second largest, ..."),
    size: int = typer.Option(256, "--size", help="Crop side in pixels."),
    margin: float = typer.Option(0.5, "--margin", help="Space around the face in the crop (fraction)."),
    detect_every: int = typer.Option(1, "--detect-every", help="Run the detector every K frames, track between."),
    no_smooth: bool = typer.Option(False, "--no-smooth", help="Do not smooth the crop transform."),
    codec: str = CODEC,
    crf: int = CRF,
    force: bool = FORCE,
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary with per-frame records."),
    quiet: bool = QUIET,
):
    """Find and follow the face; draw the track, optionally write the aligned crops."""
    from facevid.tasks.track import JsonFrames
    from facevid.tasks.track import track as run_track

    records = JsonFrames() if as_json else None
    summary = run_track(video, output, crops=crops, aligner=aligner, face=face, size=size, margin=margin,
                        detect_every=detect_every, smooth=not no_smooth, codec=codec, crf=crf, force=force,
                        progress=not quiet, allow_truncated=allow_truncated, on_frame=records)
    if records is not None:
        records.dump(summary.to_json(), sys.stdout)
    elif not quiet:
        print(f"{summary.frames} frames ({summary.frames_without_face} without a face) at "
              f"{summary.fps:.1f} fps -> {summary.output}", file=sys.stderr)


@app.command(epilog="Example: facevid prepare ./my_videos -o ./cache --labels identities.csv")
@_friendly
def prepare(
    videos: Path = typer.Argument(..., help="Folder of videos (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="Cache folder (created; re-running resumes)."),
    size: int = typer.Option(256, "--size", help="Crop side in pixels."),
    margin: float = typer.Option(0.5, "--margin", help="Space around the face in the crop (fraction)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV/TSV with path and identity columns."),
    images: bool = typer.Option(False, "--images", help="Also take still images (as one-frame clips)."),
    no_landmarks68: bool = typer.Option(False, "--no-landmarks68", help="Skip the 68-point landmarks."),
    aligner: str = ALIGNER,
    retry_skipped: bool = typer.Option(False, "--retry-skipped",
                                       help="Try again the files an earlier run skipped (default: only changed ones)."),
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Track and crop every video in a folder into a training cache (resumable)."""
    from dataclasses import asdict

    from facevid.train.prepare import prepare as run_prepare

    summary = run_prepare(videos, output, size=size, margin=margin, labels=labels, images=images,
                          landmarks68=not no_landmarks68, aligner=aligner, progress=not quiet,
                          retry_skipped=retry_skipped, allow_truncated=allow_truncated)
    if as_json:
        print(json.dumps(asdict(summary), indent=1))
    elif not quiet:
        print(f"{summary.clips} clips, {summary.frames} frames in {summary.cache} "
              f"({summary.added} added, {summary.resumed} already there, {len(summary.skipped)} skipped)",
              file=sys.stderr)


@app.command(epilog="Example: facevid train ./my_videos -o runs/me --preset small --max-minutes 60")
@_friendly
def train(
    data: list[Path] = typer.Argument(..., help="Folders of videos and/or caches made by `facevid prepare`."),
    output: Path = typer.Option(..., "-o", "--output", help="Run folder: checkpoints, weights, grids, logs."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Model size: tiny, small or paper."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of training settings."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the output folder."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights (safetensors)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (and save) after this long."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop (and save) at this step."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="File of identities never to train on."),
    synthetic: Optional[float] = typer.Option(None, "--synthetic", help="Share of synthetic-head clips (0..1)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    as_json: bool = AS_JSON,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train a model on a folder of videos (cross-driven BCD training, resumable)."""
    from dataclasses import asdict

    from facevid.config import load_train_config
    from facevid.io.cache import read_identities
    from facevid.train.loop import train as run_train

    cfg = load_train_config(config, preset=preset, max_minutes=max_minutes, max_steps=max_steps,
                            eval_identities=read_identities(holdout), synthetic_prob=synthetic, threads=threads,
                            device=device, seed=seed)
    summary = run_train(data, output, cfg, resume=resume, init_weights=init, progress=not quiet,
                        log=lambda line: print(line, file=sys.stderr))
    if as_json:
        print(json.dumps(asdict(summary), indent=1))
    else:
        print(f"{summary.steps} steps ({summary.stopped}) in {summary.minutes:.1f} min, "
              f"{summary.frames_per_second:.1f} frames/s -> {summary.weights}", file=sys.stderr)
    code = {"interrupted": 130, "terminated": 143}.get(summary.stopped, 0)
    if code:
        print(f"facevid: {summary.stopped} at step {summary.steps}; saved, continue with --resume", file=sys.stderr)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Everything is written and the process group destroyed; Gloo's worker threads can still
        # abort the interpreter's teardown (SIGABRT, "terminate called without an active
        # exception", seen once in CI; pytorch/pytorch#179291): a DDP rank leaves without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise typer.Exit(code)


@app.command(name="train-mouth", epilog="Example: facevid train-mouth ./cache --weights small -o mouth.safetensors "
                                         "--run-dir runs/mouth --holdout splits/faces_eval.txt")
@_friendly
def train_mouth(
    data: list[Path] = typer.Argument(..., help="Folders of videos and/or caches made by `facevid prepare`."),
    output: Path = typer.Option(..., "-o", "--output", help="Weights to write: the model with its mouth refiner."),
    run_dir: Path = typer.Option(..., "--run-dir", help="Folder of the model's outputs and the checkpoint."),
    weights: Optional[str] = WEIGHTS,
    steps: int = typer.Option(3000, "--steps", help="Training steps (in all, counting a resumed run's)."),
    batch: int = typer.Option(32, "--batch", help="Mouth windows per step."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (and save) after this long."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="File of identities never to train on."),
    device: str = DEVICE,
    force: bool = FORCE,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Train the mouth refiner of a model on its own outputs (the rest of the model stays)."""
    from facevid.io.cache import read_identities
    from facevid.train.mouth import MouthTrainConfig
    from facevid.train.mouth import train_mouth as run

    if steps < 1 or batch < 1:
        _fail("--steps and --batch must be at least 1", 2)
    summary = run(weights, data, output, run_dir=run_dir, cfg=MouthTrainConfig(steps=steps, batch=batch),
                  holdout=read_identities(holdout) or (), max_minutes=max_minutes, device=device, force=force,
                  progress=not quiet,
                  log=lambda line: print(line, file=sys.stderr))
    chosen = "" if summary["exported_step"] == summary["steps"] else \
        f" (the refiner of step {summary['exported_step']}: the best on the held-out mouths)"
    print(f"{summary['steps']} steps -> {summary['output']}{chosen}", file=sys.stderr)


@app.command(name="eval", epilog="Example: facevid eval runs/me/model.safetensors --data cache --holdout "
                                  "splits/faces_eval.txt --sheet eval.png --synthetic")
@_friendly
def evaluate(
    weights: str = typer.Argument(..., help="Model weights: a name in weights.toml (e.g. small) or a file."),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared cache with the evaluation clips."),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help="Only these identities (one per line)."),
    max_frames: int = typer.Option(100, "--max-frames", help="Frames per clip."),
    max_clips: int = typer.Option(0, "--max-clips", help="At most this many clips (0: all)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (0: warp only)."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Write a PNG of side-by-side frames."),
    cross: bool = typer.Option(False, "--cross", help="Also cross-reenactment (identity, motion, TL/TG-ID)."),
    synthetic: bool = typer.Option(False, "--synthetic",
                                   help="Also the synthetic-head benchmark (identity and motion factor errors)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs",
                                         help="The transfer benchmark: a list of source/driver pairs (e.g. "
                                              "splits/transfer_pairs.tsv), run through transfer, full frames scored."),
    edits: Optional[Path] = typer.Option(None, "--edits",
                                         help="The edit benchmark: a list of held-out clips (e.g. "
                                              "splits/edit_clips.tsv), each attribute edited, full frames measured."),
    media: Optional[Path] = typer.Option(None, "--media", help="The folder the --pairs or --edits paths are under."),
    pose: str = typer.Option("carry", "--pose", help="The transfer benchmark's --pose (carry or still)."),
    render_size: int = typer.Option(RENDER_SIZE, "--render-size", help="The transfer benchmark's --render-size."),
    device: str = DEVICE,
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing sheets."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Self- (and cross-) reenactment quality on held-out clips, the model beside its baselines;
    with --synthetic, factor errors after transfer between synthetic heads (no --data needed);
    with --pairs, the transfer benchmark on full output frames; with --edits, the edit benchmark."""
    from facevid.eval.run import evaluate as run_eval
    from facevid.eval.run import tables

    result = run_eval(weights, data=data, holdout=holdout, max_frames=max_frames, max_clips=max_clips, steps=steps,
                      sheet=sheet, cross=cross, synthetic=synthetic, pairs=pairs, media=media, edits=edits,
                      transfer_options={"pose": pose, "render_size": render_size}, device=device, force=force,
                      progress=not quiet)
    if as_json:
        print(json.dumps(result, indent=1))
    else:
        print(tables(result))


@app.command(epilog="Example: facevid transfer face.png drive.mp4 -o out.mp4 --steps 6 --seed 1")
@_friendly
def transfer(
    source: Path = typer.Argument(..., help="The face to animate: an image or a video."),
    driver: Path = typer.Argument(..., help="The video whose motion is copied."),
    output: Path = typer.Option(..., "-o", "--output", help="Output video."),
    weights: Optional[str] = WEIGHTS,
    absolute: bool = typer.Option(False, "--absolute", help="Copy the driver's pose as is (default: relative)."),
    steps: Optional[int] = STEPS,
    sampler: str = SAMPLER,
    guidance: float = typer.Option(1.0, "--guidance", help="Classifier-free guidance scale."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same output)."),
    no_paste_back: bool = typer.Option(False, "--no-paste-back", help="Write the generated crops only."),
    no_colour_match: bool = typer.Option(False, "--no-colour-match",
                                         help="A video source: its face (from its first frame) is not "
                                              "colour-matched to each frame."),
    window: int = WINDOW,
    motion: str = typer.Option(DEFAULT_MOTION, "--motion",
                               help="Where the warp's landmark motion comes from: 'landmarks' (the tracker's 68 dlib "
                                    "points, measured best), 'keypoints' (the model's KeypointNet) or 'codes' (what the "
                                    "motion codes imply, as decode does)."),
    aligner: str = ALIGNER,
    face: int = typer.Option(1, "--face", help="Which face of the source to animate: 1 = largest, 2 = second, ..."),
    driver_face: int = typer.Option(1, "--driver-face", help="Which face of the driver gives the motion."),
    pose: str = typer.Option("carry", "--pose",
                             help="'carry': the source's head turns, tilts and moves as the driver's does since its "
                                  "first frame; 'still': the head stays, only the expression moves."),
    render_size: int = typer.Option(RENDER_SIZE, "--render-size",
                                    help="Largest side of the face crop the output is rendered at (the source's own "
                                         "resolution up to this; the model's size at most makes it blurred)."),
    device: str = DEVICE,
    codec: str = CODEC,
    crf: int = CRF,
    force: bool = FORCE,
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Animate a face (photo or video) with the motion of a driving video, or with the
    expression of a driving photo (an image output holds that one frame)."""
    from facevid.tasks.transfer import transfer as run_transfer

    summary = run_transfer(source, driver, output, model=weights, steps=steps, sampler=sampler, guidance=guidance,
                           seed=seed, absolute=absolute, paste=not no_paste_back,
                           colour_match=not no_colour_match, window=window, motion=motion, aligner=aligner,
                           face=face, driver_face=driver_face, allow_truncated=allow_truncated, pose=pose,
                           render_size=render_size, device=device, codec=codec, crf=crf, force=force,
                           progress=not quiet)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
    elif not quiet:
        print(f"{summary.frames} frames at {summary.fps:.1f} fps -> {summary.output}", file=sys.stderr)


@app.command(epilog="Example: facevid edit talk.mp4 --attr smile=+0.2 --set eyes=0.3 --from 2 --to 4.5 --ramp 0.3 "
                     "-o out.mp4")
@_friendly
def edit(
    input: Optional[Path] = typer.Argument(None, help="The video or photo to edit."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output: a video for a video, an image for "
                                                                         "an image."),
    attr: list[str] = typer.Option([], "--attr", help="NAME=SHIFT: change an attribute by SHIFT in its unit on "
                                                      "every frame, e.g. smile=+0.2 or yaw=-10 (repeatable)."),
    set_: list[str] = typer.Option([], "--set", help="NAME=VALUE: bring an attribute to VALUE on every frame, "
                                                     "e.g. eyes=0 closes the eyes, roll=0 levels the head."),
    start: float = typer.Option(0.0, "--from", help="Edit from this time (seconds)."),
    end: Optional[float] = typer.Option(None, "--to", help="Edit until this time (seconds; default: the end)."),
    ramp: float = typer.Option(0.0, "--ramp", help="Ease the edit in and out over this many seconds."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Instead of the edit, an image (STRIP.png) of "
                                                                    "one frame at strengths -1, -0.5, 0, 0.5, 1 of "
                                                                    "each asked edit."),
    attr_file: list[Path] = typer.Option([], "--attr-file", help="An attribute learned by facevid learn-attr "
                                                                  "(NAME.safetensors), then edited by its name "
                                                                  "(repeatable)."),
    list_attrs: bool = typer.Option(False, "--list-attrs", help="List the attributes, their units and ranges."),
    directions: Optional[Path] = typer.Option(None, "--directions", help="Attribute directions file (default: "
                                                                         "the bundled ones)."),
    weights: Optional[str] = WEIGHTS,
    face: int = typer.Option(1, "--face", help="Which face to edit: 1 = largest, 2 = second, ..."),
    aligner: str = ALIGNER,
    render_size: int = typer.Option(RENDER_SIZE, "--render-size",
                                    help="Largest side of the face crop the edit is rendered at."),
    device: str = DEVICE,
    codec: str = CODEC,
    crf: int = CRF,
    force: bool = FORCE,
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Change what a face does across a whole video or a photo: smile, mouth, eyes, brows, head
    pose, one slider per attribute, over a time span. Frames outside it and frames without a
    face pass unchanged."""
    from facevid.tasks.edit import Span, known_attributes, list_attributes, load_learned, parse_edits
    from facevid.tasks.edit import edit as run_edit

    learned = load_learned(attr_file)
    known = known_attributes(learned)
    if list_attrs:
        print(list_attributes(known))
        return
    if output is not None and preview is not None:
        raise ConfigError("give -o OUTPUT (the edit) or --preview STRIP.png (a strip of strengths), not both")
    if input is None or (output is None and preview is None):
        raise ConfigError("edit needs an INPUT and -o OUTPUT, or --preview STRIP.png (or --list-attrs)")
    shift, target = parse_edits(attr, "--attr", known), parse_edits(set_, "--set", known)
    if not shift and not target:
        raise ConfigError("nothing to edit: give --attr NAME=SHIFT or --set NAME=VALUE (see --list-attrs)")
    span = Span(start, math.inf if end is None else end, ramp)
    summary = run_edit(input, output or preview, preview=preview is not None, shift=shift, target=target, span=span,
                       model=weights, directions=directions, attributes=learned, face=face, aligner=aligner,
                       render_size=render_size, device=device, codec=codec, crf=crf, allow_truncated=allow_truncated,
                       force=force, progress=not quiet)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
    elif not quiet:
        print(_edited(summary), file=sys.stderr)


def _edited(summary) -> str:
    """edit's summary line."""
    if summary.preview_time is not None:
        return (f"the frame at {summary.preview_time:.2f} s at strengths -1 to +1 of {', '.join(summary.edits)} -> "
                f"{summary.output}")
    return f"{summary.frames} frames ({summary.edited_frames} edited) at {summary.fps:.1f} fps -> {summary.output}"


@app.command(name="learn-attr", epilog="Example: facevid learn-attr frown --positive ./frowning --negative ./neutral "
                                       "-o frown.safetensors && facevid edit talk.mp4 --attr-file frown.safetensors "
                                       "--attr frown=0.8 -o out.mp4")
@_friendly
def learn_attr(
    name: str = typer.Argument(..., help="The attribute's name (lower-case letters, digits and '-')."),
    positive: Path = typer.Option(..., "--positive", help="A folder of images or videos that show it."),
    negative: Path = typer.Option(..., "--negative", help="A folder of images or videos that do not."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write it (NAME.safetensors)."),
    frames: int = typer.Option(30, "--frames", help="Frames taken from each video, spread over it."),
    weights: Optional[str] = WEIGHTS,
    aligner: str = ALIGNER,
    force: bool = FORCE,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Learn an attribute from examples: the faces of a folder that shows it and of one that does
    not, separated by logistic regression on their landmarks, for edit --attr-file."""
    from facevid.tasks.learn_attr import learn_attribute

    summary = learn_attribute(name, positive, negative, output, model=weights, aligner=aligner, max_frames=frames,
                              force=force, progress=not quiet)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
    elif not quiet:
        print(f"{name}: held-out accuracy {summary.accuracy:.2f} on {summary.positive_files} + "
              f"{summary.negative_files} files ({summary.frames} faces) -> {summary.output}", file=sys.stderr)
    if summary.skipped and not quiet:
        print(f"no face found in {len(summary.skipped)} files: {', '.join(summary.skipped[:3])}"
              f"{' ...' if len(summary.skipped) > 3 else ''}", file=sys.stderr)


@app.command(epilog="Example: facevid encode talk.mp4 -o talk.fvl")
@_friendly
def encode(
    video: Path = typer.Argument(..., help="Video to encode."),
    output: Path = typer.Option(..., "-o", "--output", help="The .fvl file to write."),
    weights: Optional[str] = WEIGHTS,
    window: int = WINDOW,
    aligner: str = ALIGNER,
    face: int = typer.Option(1, "--face", help="Which face to encode: 1 = largest, 2 = second largest, ..."),
    device: str = DEVICE,
    force: bool = FORCE,
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Encode a clip as content + discrete motion codes (.fvl); prints bits per frame."""
    from facevid.tasks.codec import encode as run_encode

    summary = run_encode(video, output, model=weights, window=window, aligner=aligner, face=face, device=device,
                         allow_truncated=allow_truncated, force=force, progress=not quiet)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
    elif not quiet:
        print(f"{summary.frames} frames, motion {summary.bits_per_frame} bits/frame = {summary.motion_kbps:.2f} "
              f"kbit/s, file {summary.file_bytes} bytes -> {summary.output}", file=sys.stderr)


@app.command(epilog="Example: facevid decode talk.fvl -o recon.mp4 --background talk.mp4")
@_friendly
def decode(
    fvl: Path = typer.Argument(..., help="An .fvl file made by `facevid encode`."),
    output: Path = typer.Option(..., "-o", "--output", help="Video to write."),
    background: Optional[Path] = typer.Option(None, "--background", help="Paste back into this video's frames."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights (default: those named in the file)."),
    steps: Optional[int] = STEPS,
    sampler: str = SAMPLER,
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    window: int = WINDOW,
    device: str = DEVICE,
    codec: str = CODEC,
    crf: int = CRF,
    force: bool = FORCE,
    allow_truncated: bool = ALLOW_TRUNCATED,
    as_json: bool = AS_JSON,
    quiet: bool = QUIET,
):
    """Rebuild a video from an .fvl file."""
    from facevid.tasks.codec import decode as run_decode

    summary = run_decode(fvl, output, model=weights, background=background, steps=steps, sampler=sampler, seed=seed,
                         window=window, device=device, allow_truncated=allow_truncated, codec=codec, crf=crf,
                         force=force, progress=not quiet)
    if as_json:
        print(json.dumps(summary.to_json(), indent=1))
    elif not quiet:
        print(f"{summary.frames} frames at {summary.fps:.1f} fps -> {summary.output}", file=sys.stderr)


weights_app = typer.Typer(help="List and check the bundled weights (weights.toml).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@_friendly
def weights_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """The weights listed in weights.toml: name, file, size, preset, training, results."""
    from facevid.weights import registry, weights_state

    entries = registry()
    if as_json:
        print(json.dumps({n: {**e.info, "exists": e.path.exists(), "state": weights_state(e)}
                          for n, e in entries.items()}, indent=1))
        return
    if not entries:
        print("no weights listed in weights.toml")
    for name, entry in entries.items():
        state = weights_state(entry)
        print(f"{name}: {entry.path.name} ({entry.size / 1e6:.1f} MB, {state}), preset {entry.info.get('preset')}, "
              f"{entry.info.get('steps')} steps")


@weights_app.command("verify")
@_friendly
def weights_verify():
    """Check every listed weights file against its size and sha256 (exit 1 on any failure)."""
    from facevid.weights import registry, verify

    entries = registry()
    for label, entry in [*(("", e) for e in entries.values()),
                         *(("directions ", e) for e in registry(table="directions").values())]:
        verify(entry)
        print(f"{label}{entry.name}: ok ({entry.sha256[:12]})")
    if not entries:
        print("no weights listed in weights.toml")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: usage errors become one line too (exit 2)."""
    with contextlib.suppress(ValueError):   # not the main thread (an embedding program's): leave SIGTERM alone
        signal.signal(signal.SIGTERM, _terminate)
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", FacevidWarning)   # every file's warning, not each line's first
    try:
        code = app(args=argv, prog_name="facevid", standalone_mode=False)
    except typer.TyperException as error:  # click usage errors (unknown option, bad value)
        if type(error).__name__ == "NoArgsIsHelpError":  # bare `facevid`: show the help
            print(error.format_message())
            sys.exit(2)
        print(f"facevid: error: {error.format_message()} (see 'facevid --help')", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2) or 2)
    except (typer.Abort, KeyboardInterrupt) as error:   # a signal outside a command's own handling
        terminated = isinstance(error, Interrupted) or isinstance(error.__cause__, Interrupted)
        print(f"facevid: error: {'terminated' if terminated else 'aborted'}", file=sys.stderr)
        sys.exit(143 if terminated else 130)
    sys.exit(code if isinstance(code, int) else 0)
