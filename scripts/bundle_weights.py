"""Turn a training run's weights into the bundled file and print its weights.toml entry.

    python scripts/bundle_weights.py RUN/model.safetensors [-o facevid/assets/facevid-small.safetensors] [--sampler-steps N]

Stores float16 (half the size; facevid loads it back as float32) and prints the sha256, size
and training metadata to paste into weights.toml beside the evaluation numbers.
`--sampler-steps` sets the sampler steps the weights default to (0: warp only, 1: the denoiser's mean), chosen
by `facevid eval`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from facevid.weights import export_weights, load_weights, sha256_of, weights_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("facevid/assets/facevid-small.safetensors"))
    parser.add_argument("--sampler-steps", type=int, default=None,
                        help="default sampler steps of these weights (not training steps)")
    args = parser.parse_args()
    meta = weights_metadata(args.weights)
    model = load_weights(args.weights)
    if args.sampler_steps is not None:
        model.cfg = replace(model.cfg, sample_steps=args.sampler_steps)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    export_weights(model, args.output, meta, half=True)
    print(f'path = "{args.output}"\nsha256 = "{sha256_of(args.output)}"\nsize = {args.output.stat().st_size}\n'
          f'steps = {meta.get("steps", 0)}')


if __name__ == "__main__":
    main()
