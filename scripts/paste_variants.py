"""Transfer benchmark rows under paste-back variants (docs/decisions.md, "Transfer pastes back by
one warp of the source frame"): the compositor's blend mask, or the model's output replaced by
the real driver crop (on self-driven pairs: the ceiling a paste-back sets).

    python scripts/paste_variants.py --rows 7,8,9 --frames 50 [--blend head|face|square]
        [--real-crop ellipse|square|at-driver]

--real-crop pastes the driver's own crop (cut at the driver's transform) the way transfer pasted
before the one-warp compositor: the head and background moved by the carried pose, the crop put
on under the face's ellipse (or the square crop); at-driver puts it at the driver's own transform
on the unmoved photo, with the square crop.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from facevid.eval.transfer_bench import FrameMeter, read_pairs, score_pair  # noqa: E402

KEYS = ("psnr", "motion", "motion_no_head", "sharpness", "same_person", "worst_identity")


def real_crops(mask: str) -> None:
    """Transfer pastes each frame's real driver crop instead of what the model made."""
    import facevid.tasks.transfer as T
    from facevid.face.crop import (
        crop_mask,
        cut_crop,
        move_head,
        moved_transform,
        native_side,
        paste_back,
        rescale_transform,
    )

    seen = {}
    tracked = T.track_faces

    def track_faces(*args, **kwargs):
        for face in tracked(*args, **kwargs):
            seen[face.index] = face
            yield face

    def paste(self, image, made, transform, change):
        face = seen[self.frames - 1]
        side = native_side(face.transform, self.size, 512)   # the old paste-back's render size
        scale = side / self.size
        crop = cut_crop(face.image, rescale_transform(face.transform, scale), side)
        shape = "square" if mask in ("square", "at-driver") else "face"
        if mask == "at-driver":
            place = face.transform
        else:
            place = transform if change is None else moved_transform(transform, change)
            image = image if change is None else move_head(image, transform, change, self.size)
        return paste_back(image, crop, rescale_transform(place, scale), mask=crop_mask(side, shape))

    T.track_faces, T.Transfer._paste = track_faces, paste


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="splits/transfer_pairs.tsv")
    parser.add_argument("--media", default="../shared/data/faces")
    parser.add_argument("--rows", default="7,8,9", help="0-based rows of the pair list")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--blend", default="head", choices=("head", "face", "square"))
    parser.add_argument("--real-crop", default=None, choices=("ellipse", "square", "at-driver"))
    parser.add_argument("--weights", default="small")
    args = parser.parse_args()
    import facevid.face.composite as composite
    from facevid.weights import load_model

    composite.BLEND = args.blend
    if args.real_crop:
        real_crops(args.real_crop)
    pairs = read_pairs(args.pairs, args.media)
    model, meter = load_model(args.weights), FrameMeter()
    print("| pair | method | " + " | ".join(KEYS) + " |\n|---|---|" + "---|" * len(KEYS))
    for row in (int(r) for r in args.rows.split(",")):
        result = score_pair(model, pairs[row], meter, max_frames=args.frames, options={})
        for method in ("facevid", "landmark warp", "copy source"):
            cells = " | ".join(f"{result[method].get(k, float('nan')):.3f}" for k in KEYS)
            print(f"| {pairs[row].name} | {method} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
