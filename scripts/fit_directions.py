"""Fit the attribute directions (facevid.face.directions) on a prepared cache's training clips and
print their cross-talk on the held-out ones.

    python scripts/fit_directions.py CACHE --holdout splits/faces_eval.txt \
        -o facevid/assets/directions-small.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np

from facevid.face.attributes import ATTRIBUTES
from facevid.face.directions import NAMES, crosstalk, fit_directions
from facevid.io.cache import load_cache, read_identities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("--holdout", default="splits/faces_eval.txt")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--frames", type=int, default=400, help="held-out frames the cross-talk is measured on")
    args = parser.parse_args()
    held = set(read_identities(args.holdout))
    train = load_cache(args.cache, exclude=held)
    test = load_cache(args.cache, include=held)
    directions = fit_directions(c.landmarks for c in train)
    directions.save(args.output)
    rng = np.random.default_rng(0)
    frames = np.concatenate([c.landmarks for c in test])
    frames = frames[rng.choice(len(frames), min(args.frames, len(frames)), replace=False)]
    table = crosstalk(directions, frames)
    span = np.array([ATTRIBUTES[n].high - ATTRIBUTES[n].low for n in NAMES])
    print(f"{len(train)} training clips ({directions.frames} frames) -> {args.output}; cross-talk on "
          f"{len(frames)} frames of {len(test)} held-out clips: each attribute's move per unit of each direction, "
          "and in brackets a full slider range's move as a share of the other attribute's range")
    print("| direction | " + " | ".join(NAMES) + " |\n|---|" + "---|" * len(NAMES))
    for i, name in enumerate(NAMES):
        cells = [f"{table[i, j]:.2f} ({abs(table[i, j]) * span[i] / span[j]:.0%})" for j in range(len(NAMES))]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
