#!/usr/bin/env bash
# Train (or continue) the bundled `small` model on this CPU, exactly as it was trained:
# ../shared/data/faces minus the held-out identities in splits/faces_eval.txt, plus 120
# synthetic talking heads. Resumable: run it again to continue from the last checkpoint.
#   scripts/train_small.sh [RUN_DIR]        (default ~/.cache/facevid-train/run10)
# The current run, run10, continues run_box: the current model trained from scratch for 60
# minutes (issue 3's time-boxed run), resumed with the correspondence loss added. The bundled
# file is still run9 (run3 from scratch, then run4-run9 each started with `--init` from the
# one before after a model change; `--init` starts new modules fresh and gives widened
# layers zeros on their new inputs). A fresh RUN_DIR trains the current model from scratch.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${FACEVID_TRAIN_HOME:-$HOME/.cache/facevid-train}
run=${1:-$work/run10}
faces=${FACEVID_FACES:-../shared/data/faces}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$work"
# 1. crops + landmarks of every clip (about 25 min the first time; resumes)
facevid prepare "$faces" -o "$work/cache256" --labels "$faces/MANIFEST.tsv" -q
# 2. synthetic heads with exact landmarks (seconds)
[ -f "$work/synthetic128/manifest.json" ] || python -c "
from facevid.prepare import write_synthetic_cache
write_synthetic_cache('$work/synthetic128', clips=120, frames=48, size=128, seed=7)"
# 3. train; checkpoints every 5 minutes; Ctrl-C saves
resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume)
exec facevid train "$work/cache256" "$work/synthetic128" -o "$run" --preset small \
  --holdout splits/faces_eval.txt --threads 2 --max-minutes 100000 -q "${resume[@]}"
