"""Benchmark the foundation pipeline: decode → track → crop → paste-back → encode.

Prints frames/s per stage on a 512x512 and a 1280x720 clip, then the resident memory
while streaming a 10-minute clip (it must stay flat, not grow with length).

    python benchmarks/bench_pipeline.py [--minutes 10] [--frames 150]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from facevid import demo  # noqa: E402
from facevid.face.crop import CropSpec, cut_crop, paste_back  # noqa: E402
from facevid.face.track import DlibBackend, FaceTracker  # noqa: E402
from facevid.io.video import iter_frames  # noqa: E402
from facevid.io.writer import VideoWriter

STAGES = ("decode", "track", "crop", "paste-back", "encode")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(path: Path, out: Path, *, size: int = 256, detect_every: int = 1, rss_every: int = 0):
    """Stream the clip through every stage; seconds per stage, frames, and RSS samples."""
    tracker = FaceTracker(DlibBackend(), CropSpec(size=size), detect_every=detect_every)
    seconds = dict.fromkeys(STAGES, 0.0)
    samples, frames = [], 0
    with VideoWriter(out, Fraction(25), audio_from=path, force=True, preset="veryfast") as writer:
        stream = iter_frames(path)
        while True:
            t0 = time.perf_counter()
            frame = next(stream, None)
            t1 = time.perf_counter()
            if frame is None:
                break
            face = tracker.update(frame.image, frame.index, frame.time)
            t2 = time.perf_counter()
            image = frame.image
            if face.found:
                crop = cut_crop(image, face.transform, size)
                t3 = time.perf_counter()
                image = paste_back(image, crop, face.transform)
            else:
                t3 = time.perf_counter()
            t4 = time.perf_counter()
            writer.write(image, frame.time)
            t5 = time.perf_counter()
            for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                seconds[stage] += dt
            frames += 1
            if rss_every and frames % rss_every == 0:
                samples.append((frames, rss_mb()))
    return seconds, frames, samples


def stage_table(rows):
    print(f"| clip | frames | {' | '.join(STAGES)} | end to end |")
    print("|" + "---|" * (len(STAGES) + 3))
    for name, seconds, frames in rows:
        cells = [f"{frames / max(s, 1e-9):.0f}" for s in seconds.values()]
        print(f"| {name} | {frames} | {' | '.join(cells)} | {frames / sum(seconds.values()):.1f} |")
    print("(frames/s of each stage alone; crop and paste-back at 256x256, detector on every frame)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for name, size in (("512x512", (512, 512)), ("1280x720", (1280, 720))):
            clip = tmp / f"{name}.mp4"
            demo.make_clip(clip, frames=args.frames, size=size, motion=demo.EXAMPLE_MOTION)
            seconds, frames, _ = run(clip, tmp / "out.mp4")
            rows.append((name, seconds, frames))
        stage_table(rows)
        if args.minutes > 0:
            long_frames = int(args.minutes * 60 * 25)
            clip = tmp / "long.mp4"
            print(f"\nwriting a {args.minutes:g}-minute 320x288 clip ({long_frames} frames)...", flush=True)
            demo.make_clip(clip, frames=long_frames, size=(320, 288), motion=demo.EXAMPLE_MOTION, crf=30)
            seconds, frames, samples = run(clip, tmp / "out.mp4", detect_every=5, rss_every=long_frames // 10)
            print("\n| frames streamed | resident memory (MB) |\n|---|---|")
            for n, mb in samples:
                print(f"| {n} ({n / 25 / 60:.1f} min) | {mb:.0f} |")
            print(f"end to end {frames / sum(seconds.values()):.1f} frames/s (detector every 5th frame)")


if __name__ == "__main__":
    main()
