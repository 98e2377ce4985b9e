#!/usr/bin/env bash
# Train (or continue) the bundled `small` model on this CPU, exactly as it was trained:
# ../shared/data/faces minus the held-out identities in splits/faces_eval.txt, plus 120
# synthetic talking heads. Resumable: run it again to continue from the last checkpoint.
#   scripts/train_small.sh [RUN_DIR]        (default ~/.cache/facevid-train/small)
# The bundled weights grew in stages (facevid/assets/weights.toml lists them): 60 minutes from
# scratch; the correspondence loss (to step 2,820); the flow code added with `--init` (fitted on
# the data as training began; `--init` starts new modules fresh, gives widened layers zeros on
# their new inputs, and restarts the heads that corrected the TPS when a flow code is added);
# the flow U-Net's output layer zeroed, correspondence weight 0.3 (now the default), to step
# 1,600; 248 steps on cache version 2's crop-measured landmarks; 400 with the mouth weight; then
# all of scripts/train_small.toml (mouth-weighted diffusion loss, half the teacher-forced clips
# pinned to their landmarks) to step 4,060, the bundled step. Near step 4,610 of that stage the
# landmark loss jumped (0.85 -> 2.5) and stayed: continue from an earlier checkpoint, or
# `--init` from the bundled file. A fresh RUN_DIR trains the current model from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${FACEVID_TRAIN_HOME:-$HOME/.cache/facevid-train}
run=${1:-$work/small}
faces=${FACEVID_FACES:-../shared/data/faces}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
# 1. crops + landmarks of every clip (about 25 min the first time; resumes; re-measures the
#    landmarks of a version-1 cache)
facevid prepare "$faces" -o "$work/cache256" --labels "$faces/MANIFEST.tsv" -q
# 2. synthetic heads with exact landmarks (seconds)
[ -f "$work/synthetic128/manifest.json" ] || python -c "
from facevid.train.prepare import write_synthetic_cache
write_synthetic_cache('$work/synthetic128', clips=120, frames=48, size=128, seed=7)"
# 3. train; checkpoints every 5 minutes; Ctrl-C saves
resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume)
exec facevid train "$work/cache256" "$work/synthetic128" -o "$run" --preset small --config scripts/train_small.toml \
  --holdout splits/faces_eval.txt --threads 2 --max-minutes 100000 -q "${resume[@]}"
