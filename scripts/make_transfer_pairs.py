"""Build splits/transfer_pairs.tsv, the source/driver pairs of `facevid eval --pairs`, from the
held-out identities of ../shared/data/faces (the list is shipped, the media are not).

  python scripts/make_transfer_pairs.py ../shared/data/faces [--holdout splits/faces_eval.txt]

Every held-out clip is tracked (dlib) and measured: frame size, face size (eye distance in
pixels), the range (5th to 95th percentile) of its head yaw, pitch and roll and of its mouth
opening. Sources are the first frames of the clips whose frame is at least 512 px; drivers are
the clips with the largest head motion and the most talking, each driving a source of another
person; the sources with the most motion also drive themselves from their first frame (the
pairs scored against real frames). Prints the measurements as a table.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

SOURCES_MIN_SIDE = 512
HEAD_DRIVERS, TALKING_DRIVERS, SELF_PAIRS = 4, 3, 3


def measure_clip(path: Path, max_frames: int = 300) -> dict | None:
    from facevid.face.attributes import measure
    from facevid.face.crop import CropSpec, invert_affine, transform_points
    from facevid.face.track import DlibBackend, FaceTracker, Landmarks68
    from facevid.io.video import iter_frames

    spec = CropSpec(size=256)
    tracker, marks = FaceTracker(DlibBackend(), spec), Landmarks68(spec)
    rows, size = [], None
    for frame in iter_frames(path):
        if frame.index >= max_frames:
            break
        size = frame.image.shape[1], frame.image.shape[0]
        face = tracker.update(frame.image, frame.index, frame.time)
        if face.found:
            points = transform_points(invert_affine(face.transform), marks(frame.image, face))
            eyes = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
            rows.append({**measure(points), "iod": eyes})
    if not rows:
        return None
    spread = {k: float(np.subtract(*np.nanpercentile([r[k] for r in rows], [95, 5]))) for k in ("yaw", "pitch", "roll",
                                                                                                   "mouth")}
    return {"width": size[0], "height": size[1], "frames": frame.index + 1, "found": len(rows) / (frame.index + 1),
            "iod": float(np.median([r["iod"] for r in rows])), **spread,
            "head": spread["yaw"] + spread["pitch"] + spread["roll"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("media", type=Path, help="../shared/data/faces (with its MANIFEST.tsv)")
    parser.add_argument("--holdout", type=Path, default=Path("splits/faces_eval.txt"))
    parser.add_argument("-o", "--output", type=Path, default=Path("splits/transfer_pairs.tsv"))
    args = parser.parse_args()
    held = {line.strip() for line in args.holdout.read_text().splitlines() if line.strip() and not line.startswith("#")}
    with open(args.media / "MANIFEST.tsv", newline="") as f:
        clips = [(r["identity"], r["local"]) for r in csv.DictReader(f, delimiter="\t")
                 if r["identity"] in held and r["kind"] == "video"]
    measured = {}
    print("| clip | size | eye distance px | yaw | pitch | roll | mouth | face found |\n" + "|---" * 8 + "|")
    for identity, local in sorted(clips):
        m = measure_clip(args.media / local)
        if m is None:
            print(f"| {local} | no face |", file=sys.stderr)
            continue
        measured[local] = (identity, m)
        print(f"| {local} | {m['width']}x{m['height']} | {m['iod']:.0f} | {m['yaw']:.1f}° | {m['pitch']:.1f}° | "
              f"{m['roll']:.1f}° | {m['mouth']:.2f} | {m['found']:.0%} |")
    sources = sorted((c for c, (_, m) in measured.items() if min(m["width"], m["height"]) >= SOURCES_MIN_SIDE),
                     key=lambda c: -measured[c][1]["iod"])
    by_head = sorted(measured, key=lambda c: -measured[c][1]["head"])
    by_talk = sorted(measured, key=lambda c: -measured[c][1]["mouth"])
    drivers = [(c, "head motion") for c in by_head[:HEAD_DRIVERS]]
    drivers += [(c, "talking") for c in by_talk if c not in dict(drivers)][:TALKING_DRIVERS]
    pairs, used = [], []
    for driver, why in drivers:   # each driver to the largest source of another person not yet used
        person = measured[driver][0]
        choices = [s for s in sources if measured[s][0] != person]
        source = min(choices, key=lambda s: (used.count(s), sources.index(s)))
        used.append(source)
        pairs.append((source, driver, "cross", why))
    for clip in sorted(sources, key=lambda c: -measured[c][1]["head"])[:SELF_PAIRS]:
        pairs.append((clip, clip, "self", "drives itself from its first frame"))
    with open(args.output, "w") as out:
        out.write("# facevid eval --pairs: transfer benchmark pairs, paths relative to ../shared/data/faces\n"
                  "# (made by scripts/make_transfer_pairs.py; a video source is its first frame)\n"
                  "source\tdriver\tkind\twhy\n")
        for row in pairs:
            out.write("\t".join(row) + "\n")
    print(f"\n{len(pairs)} pairs -> {args.output}")


if __name__ == "__main__":
    main()
