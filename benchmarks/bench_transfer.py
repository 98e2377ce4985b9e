"""Benchmark `facevid transfer` end to end on this CPU: frames/s per stage and peak memory.

Drivers: a 512x512 and a 1280x720 clip made from the public-domain astronaut photo; the
source is the photo itself. Stages: decode, track, landmarks (dlib's 68, transfer's default
motion), crop, model (encode with the measured flow + sample), paste-back, write. Prints a
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from facevid import demo  # noqa: E402
from facevid.config import DEFAULT_MOTION  # noqa: E402
from facevid.face.crop import CropSpec, crop_mask, cut_crop, paste_back  # noqa: E402
from facevid.face.track import FaceTracker, Landmarks68, make_backend  # noqa: E402
from facevid.io.video import VideoWriter, iter_frames, probe  # noqa: E402
from facevid.pipeline import Animator  # noqa: E402
from facevid.weights import load_model  # noqa: E402

STAGES = ("decode", "track", "landmarks", "crop", "model", "paste-back", "write")


def run(model, photo, driver: Path, out: Path, steps: int, window: int = 16) -> tuple[dict, int]:
    cfg = model.cfg
    spec = CropSpec(size=cfg.out_size, margin=cfg.crop_margin, center_y=cfg.crop_center_y)
    backend = make_backend("dlib")
    src = FaceTracker(backend, spec).update(photo, 0, 0.0)
    marks68 = Landmarks68(spec)   # transfer's default motion: 68 dlib landmarks measured on the crop
    animate = Animator(model, cut_crop(photo, src.transform, cfg.out_size), steps=steps, guidance=1.0, seed=0,
                       relative=True, device="cpu", motion=DEFAULT_MOTION, source_points=marks68(photo, src))
    tracker, mask = FaceTracker(backend, spec), crop_mask(cfg.out_size, "face")
    seconds, frames, pending = dict.fromkeys(STAGES, 0.0), 0, []
    with VideoWriter(out, probe(driver).fps, audio_from=driver, force=True, preset="veryfast") as writer:
        stream = iter_frames(driver)
        while True:
            t0 = time.perf_counter()
            frame = next(stream, None)
            t1 = time.perf_counter()
            seconds["decode"] += t1 - t0
            if frame is not None:
                face = tracker.update(frame.image, frame.index, frame.time)
                t2 = time.perf_counter()
                points = marks68(frame.image, face)
                t3 = time.perf_counter()
                pending.append((frame.time, cut_crop(frame.image, face.transform, cfg.out_size), points))
                seconds["track"] += t2 - t1
                seconds["landmarks"] += t3 - t2
                seconds["crop"] += time.perf_counter() - t3
            if pending and (frame is None or len(pending) == window):
                t3 = time.perf_counter()
                made = animate([crop for _, crop, _ in pending], np.stack([points for *_, points in pending]))
                t4 = time.perf_counter()
                seconds["model"] += t4 - t3
                for (time_s, *_), crop in zip(pending, made):
                    t5 = time.perf_counter()
                    image = paste_back(photo, crop, src.transform, mask=mask, colour_match=True)
                    t6 = time.perf_counter()
                    writer.write(image, time_s)
                    seconds["paste-back"] += t6 - t5
                    seconds["write"] += time.perf_counter() - t6
                    frames += 1
                pending.clear()
            if frame is None:
                break
    return seconds, frames


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
    print(f"| driver | frames | {' | '.join(STAGES)} | end to end fps | peak RSS (MB) |")
    print("|" + "---|" * (len(STAGES) + 4))
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in (("512x512", (512, 512)), ("1280x720", (1280, 720))):
            clip = Path(tmp) / f"{name}.mp4"
            demo.make_clip(clip, frames=args.frames, size=size, motion=demo.EXAMPLE_MOTION)
            seconds, frames = run(model, photo, clip, Path(tmp) / "out.mp4", steps)
            cells = [f"{frames / max(s, 1e-9):.1f}" for s in seconds.values()]
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {name} | {frames} | {' | '.join(cells)} | {frames / sum(seconds.values()):.2f} | {rss:.0f} |")
    print(f"(frames/s of each stage alone; model = encode + {steps}-step sampler at batch 16, "
          f"{args.threads} threads; crops {model.cfg.out_size}x{model.cfg.out_size})")


if __name__ == "__main__":
    main()
