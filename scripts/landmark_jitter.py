"""How steady are the 68 landmarks, measured two ways on a prepared cache's crops?

  python scripts/landmark_jitter.py CACHE [--every 6] [--frames 120]

"per-frame box": dlib's 68-point predictor on a box fitted to each frame's own 5 tracked
landmarks (how cache version 1 measured them, there on the frame); "template box": on the
box where the crop template puts the face (facevid.face.track.Landmarks68, cache version 2,
`transfer` and `eval`). Prints each clip's jitter (mean second difference / IOD: shake)
and how far apart the two are; the lower jitter is the steadier measurement.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facevid.face.crop import CropSpec, box_from_landmarks
from facevid.face.identity import iod, jitter
from facevid.face.track import MEASURE_SIZE, Landmarks68
from facevid.io.cache import load_cache, load_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", type=Path)
    parser.add_argument("--every", type=int, default=6, help="measure every N-th clip")
    parser.add_argument("--frames", type=int, default=120, help="frames per clip")
    args = parser.parse_args()
    crop = load_manifest(args.cache)["crop"]
    marks = Landmarks68(CropSpec(size=crop["size"], margin=crop["margin"], center_y=crop["center_y"]))
    scale = MEASURE_SIZE / crop["size"]
    rows = []
    print("| clip | jitter, per-frame box | jitter, template box | apart (/ IOD) |\n|---|---|---|---|")
    for clip in load_cache(args.cache)[::args.every]:
        five = np.load(args.cache / "clips" / f"{clip.name}.npz")["landmarks5"][:args.frames]
        per_frame, template = [], []
        for frame, points in zip(clip.frames[:len(five)], five):
            image = marks.measure_size(np.asarray(frame))
            per_frame.append(marks.shape(image, box_from_landmarks(points * scale)) / scale)
            template.append(marks.on_crop(np.asarray(frame)))
        a, b = np.stack(per_frame), np.stack(template)
        rows.append((jitter(a), jitter(b), float(np.linalg.norm(a - b, axis=-1).mean() / iod(b[0]))))
        print(f"| {clip.identity[:30]} | {rows[-1][0]:.4f} | {rows[-1][1]:.4f} | {rows[-1][2]:.4f} |")
    r = np.array(rows)
    print(f"| mean of {len(r)} | {r[:, 0].mean():.4f} | {r[:, 1].mean():.4f} | {r[:, 2].mean():.4f} |")
    print(f"template box steadier on {(r[:, 1] < r[:, 0]).sum()} of {len(r)} clips")


if __name__ == "__main__":
    main()
