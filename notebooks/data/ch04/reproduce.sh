#!/usr/bin/env bash
# Regenerates the committed data of chapter 4 (notebooks/04_tiny_lm_rl.ipynb) with the package's own code:
#   notebooks/data/ch04/warm_start/   the warm-started tiny Qwen2 (350 SFT steps of the tiny-arith preset)
#   notebooks/data/ch04/runs/NAME/    metrics.jsonl + config.json of each RL run (`cegppo train`)
# About 10 minutes on one CPU thread. Run from anywhere: ./notebooks/data/ch04/reproduce.sh
# tests/test_reproducibility.py re-runs the first steps of the warm start and of every run and compares the numbers.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=${PYTHON:-.venv/bin/python}
DATA=notebooks/data/ch04
STEPS=${STEPS:-150}
DEST=${DEST:-$DATA/runs}  # where the runs' metrics and configs are kept (tests point it elsewhere)
SCRATCH=${SCRATCH:-runs/ch04}  # the full run folders (checkpoints and all), not committed

if [ "${SKIP_WARM_START:-0}" != 1 ]; then
  rm -rf "$DATA/warm_start"
  $PY -c "from cegppo_edu.lm.config import get_preset; from cegppo_edu.lm.warm_start import build_warm_start; \
print(build_warm_start(get_preset('tiny-arith'), '$DATA/warm_start'))"
fi

run() {  # name, then cegppo train arguments
  local name=$1; shift
  rm -rf "${SCRATCH:?}/$name"
  $PY -m cegppo_edu train --preset tiny-arith --steps "$STEPS" --out "$SCRATCH/$name" --no-progress \
    --set model_path=$DATA/warm_start --set warm_start_steps=0 --set checkpoint_every=0 "$@"
  mkdir -p "$DEST/$name"
  cp "$SCRATCH/$name/metrics.jsonl" "$SCRATCH/$name/config.json" "$DEST/$name/"
}

run grpo --method grpo &
run dapo --method dapo
wait
run ce_gppo --method ce_gppo --set beta1=0.5 --set beta2=1.0 &
run ce_gppo_b1-1_b2-0.5 --method ce_gppo --set beta1=1.0 --set beta2=0.5
wait
run ce_gppo_b1-0_b2-1 --method ce_gppo --set beta1=0.0 --set beta2=1.0
