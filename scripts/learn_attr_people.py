"""Leave-one-person-out accuracy of `facevid learn-attr`: the two folders hold one image per person
under the same file name (the person's), and each person in turn is left out of the fit and their
two images classified by the learned slider (beyond 0.5: positive). learn-attr's own held-out
accuracy leaves out one file, so the same person's other image stays in the fit; this does not.

    python scripts/learn_attr_people.py POSITIVE_DIR NEGATIVE_DIR [--name NAME]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from facevid.face.learned import fit_attribute
from facevid.face.track import FaceTracker, Landmarks68, make_backend
from facevid.io.video import find_media
from facevid.pipeline import crop_spec
from facevid.tasks.learn_attr import file_faces
from facevid.weights import as_model, bundled_directions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("positive", type=Path)
    parser.add_argument("negative", type=Path)
    parser.add_argument("--name", default="learned")
    args = parser.parse_args()
    cfg = as_model(None, "cpu").cfg
    spec, backend = crop_spec(cfg), make_backend("auto")
    directions = bundled_directions()
    others = [directions.vector("yaw"), directions.vector("pitch")]

    def faces(folder: Path) -> dict[str, np.ndarray]:
        found = {p.stem: file_faces(p, FaceTracker(backend, spec, smooth=False), Landmarks68(spec), cfg.out_size, 30)
                 for p in find_media(folder, images=True)}
        return {k: v for k, v in found.items() if len(v)}

    positive, negative = faces(args.positive), faces(args.negative)
    people = sorted(set(positive) & set(negative))
    right = []
    for person in people:
        rest = [p for p in people if p != person]
        learned = fit_attribute(args.name, [positive[p] for p in rest], [negative[p] for p in rest], others=others)
        right += [learned.measure(f) > 0.5 for f in positive[person]]
        right += [learned.measure(f) < 0.5 for f in negative[person]]
    print(f"{args.name}: leave-one-person-out accuracy {np.mean(right):.3f} over {len(people)} people")


if __name__ == "__main__":
    main()
