"""Benchmark `facevid transfer` and `facevid edit` end to end on this CPU: frames/s per stage and peak memory.

Drivers: a 512x512 and a 1280x720 clip made from the public-domain astronaut photo; the
source is the photo itself. It runs transfer's own streaming code (tasks.transfer.Transfer)
and times each stage's callable: decode, track, landmarks (dlib's 68, transfer's default
motion), model (encode with the measured flow + sample), paste-back, write, and the rest of
the wall time (crop, windows, opening the output). The edit rows run edit's own code
(tasks.edit.Editor, `--attr smile=+0.2` on every frame of the same clips): its model column is
the model's warp of each frame onto itself, its paste-back the render into the frame. Prints a
table; run it on a quiet machine.

    python benchmarks/bench_transfer.py --weights small [--frames 64] [--steps 6]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from facevid import demo  # noqa: E402
from facevid.io.video import Frame, iter_frames, probe  # noqa: E402
from facevid.io.writer import VideoWriter
from facevid.tasks.edit import Editor  # noqa: E402
from facevid.tasks.transfer import Transfer  # noqa: E402
from facevid.weights import bundled_directions, load_model  # noqa: E402

STAGES = ("decode", "track", "landmarks", "model", "paste-back", "write", "the rest")


def _timed(seconds: dict, stage: str, fn):
    def run(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - t0
    return run


def _timed_frames(seconds: dict, frames):
    while True:
        t0 = time.perf_counter()
        frame = next(frames, None)
        seconds["decode"] += time.perf_counter() - t0
        if frame is None:
            return
        yield frame


def run(model, photo, driver: Path, out: Path, steps: int, window: int = 16) -> tuple[dict, int]:
    """transfer's own code path (tasks.transfer.Transfer), each stage's callable timed."""
    seconds = dict.fromkeys(STAGES, 0.0)
    stream = Transfer(model, lambda: [Frame(0, 0.0, photo)], steps=steps, window=window, aligner="dlib")
    stream.tracker.update = _timed(seconds, "track", stream.tracker.update)
    stream.landmarks = _timed(seconds, "landmarks", stream.landmarks)
    stream.animate = _timed(seconds, "model", stream.animate)
    stream.paste = _timed(seconds, "paste-back", stream.paste)
    return _stream(seconds, stream, driver, out)


def _stream(seconds: dict, stream, driver: Path, out: Path) -> tuple[dict, int]:
    """The task's frames of `driver` written to `out`, decode and write timed; the rest of the
    wall time (crop, windows, opening the output) is "the rest"."""
    started = time.perf_counter()
    with VideoWriter(out, probe(driver).fps, audio_from=driver, force=True, preset="veryfast") as writer:
        write = _timed(seconds, "write", writer.write)
        for frame in stream(_timed_frames(seconds, iter_frames(driver))):
            write(frame.image, frame.time)
    seconds["the rest"] = time.perf_counter() - started - sum(seconds.values())
    return seconds, stream.frames


def run_edit(model, driver: Path, out: Path) -> tuple[dict, int]:
    """edit's own code path (tasks.edit.Editor), each stage's callable timed."""
    seconds = dict.fromkeys(STAGES, 0.0)
    stream = Editor(model, bundled_directions(), shift={"smile": 0.2}, aligner="dlib")
    stream.tracker.update = _timed(seconds, "track", stream.tracker.update)
    stream.landmarks = _timed(seconds, "landmarks", stream.landmarks)
    stream.parts = _timed(seconds, "model", stream.parts)
    stream.render = _timed(seconds, "paste-back", stream.render)
    return _stream(seconds, stream, driver, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.weights)
    steps = model.cfg.sample_steps if args.steps is None else args.steps
    photo = demo.astronaut()
    print(f"| task | driver | frames | {' | '.join(STAGES)} | end to end fps | peak RSS (MB) |")
    print("|" + "---|" * (len(STAGES) + 5))
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("512x512", (512, 512)), ("1280x720", (1280, 720))):
            clip = Path(tmp) / f"{name}.mp4"
            demo.make_clip(clip, frames=args.frames, size=size, motion=demo.EXAMPLE_MOTION)
            for task in ("transfer", "edit"):
                seconds, frames = run(model, photo, clip, Path(tmp) / "out.mp4", steps) if task == "transfer" \
                    else run_edit(model, clip, Path(tmp) / "out.mp4")
                cells = [f"{frames / max(s, 1e-9):.1f}" for s in seconds.values()]
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"| {task} | {name} | {frames} | {' | '.join(cells)} | {frames / sum(seconds.values()):.2f} "
                      f"| {rss:.0f} |")
    print(f"(frames/s of each stage alone; transfer's model = encode + {steps}-step sampler at batch 16, edit's a "
          "warp a frame; "
          f"{args.threads} threads; crops {model.cfg.out_size}x{model.cfg.out_size})")


if __name__ == "__main__":
    main()
