"""How much of the optical flow does each part of the model's warp explain? (training batches)

    python scripts/flow_diagnostic.py WEIGHTS CACHE [--batches 6] [--holdout splits/faces_eval.txt]

Draws cross-driven training batches (frame strides 1-8) and prints the mean L1 error, in
pixels at net_size, between the Farnebäck flow target → reference (16x16) and: no motion,
the TPS on the true landmarks, that TPS plus the coarse flow read off the motion codes (and
off the continuous features before quantization), the final warp grid, and the true flow
averaged to 8x8 (what an 8x8 coarse flow could reach). With a flow code the coarse flow adds
to the code's flow ("start") instead of the TPS, and the code's flow gets a row of its own.
What it measured is in docs/decisions.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from facevid.io.cache import load_cache, read_identities
from facevid.model.facevid import resize
from facevid.model.warp import grid_to_flow, tps_grid
from facevid.train.batches import BatchSampler
from facevid.weights import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights")
    parser.add_argument("cache")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--holdout", default="splits/faces_eval.txt", help="identities to leave out")
    args = parser.parse_args()
    model = load_model(args.weights)
    cfg = model.cfg
    clips = load_cache(args.cache, exclude=set(read_identities(args.holdout) or ()))
    sampler = BatchSampler(clips, out_size=cfg.out_size, net_size=cfg.net_size, clips_per_batch=4,
                           content_frames=6, target_frames=6, strides=(1, 2, 4, 8), flow_size=16, seed=1)
    pixels = cfg.net_size / 2
    errors: dict[str, list[float]] = {}
    with torch.no_grad():
        for _ in range(args.batches):
            batch = sampler.sample()
            b, tb = batch["target"].shape[:2]
            enc_a, enc_b = model.encode_halves(batch["content"], batch["target"], batch["reference"])
            ref_motion = enc_a.motion[torch.arange(b), batch["ref_index"]]
            cont_ref = enc_a.quant.continuous[torch.arange(b), batch["ref_index"]]
            true = batch["target_flow"].flatten(0, 1)
            tps = grid_to_flow(tps_grid(batch["ref_landmarks"].repeat_interleave(tb, 0),
                                        batch["target_landmarks"].flatten(0, 1), cfg.flow_size, cfg.flow_size,
                                        anchors=model.anchors))
            coarse = resize(model.coarse_flow(enc_b.motion, ref_motion).flatten(0, 1), cfg.flow_size)
            cont = resize(model.coarse_flow(enc_b.quant.continuous, cont_ref).flatten(0, 1), cfg.flow_size)
            warped = model.warp(batch["reference"], batch["ref_landmarks"], batch["target_landmarks"], ref_motion,
                                enc_b.motion)
            start = grid_to_flow(warped.start)   # the TPS, or the flow code's flow
            parts = {"no motion": torch.zeros_like(true), "TPS (true landmarks)": tps}
            if cfg.flow_code:
                parts["flow code"] = start
            parts.update({"start + coarse flow (codes)": start + coarse,
                          "start + coarse flow (continuous)": start + cont,
                          "final grid": grid_to_flow(warped.grid), "true flow at 8x8": resize(true, 8)})
            for name, flow in parts.items():
                errors.setdefault(name, []).append((pixels * (resize(flow, 16) - true).abs().mean()).item())
    print("| warp | flow error (px at net_size) |\n|---|---|")
    for name, values in errors.items():
        print(f"| {name} | {np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
