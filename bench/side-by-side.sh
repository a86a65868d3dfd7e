#!/usr/bin/env bash
# One run, same machine, same model file: `recode bench step` on the quickstart shapes, then TRL's
# GRPOTrainer (bench/trl/grpo_step.py) in the same shapes. Needs a built `recode` and the peers'
# venv (bench/trl/README.md). Usage: bench/side-by-side.sh [TRL_PYTHON] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-/work/trl-venv/bin/python}"
steps="${2:-3}"
echo "== load: $(uptime)"
echo "== recode bench step experiments/quickstart.toml --steps $steps"
target/debug/recode bench step experiments/quickstart.toml --steps "$steps" \
  --set generation.max_new_tokens=96 --set "generation.stop_strings=[]" --set training.micro_batch_size=2 \
  --set logging.progress=false
echo "== load: $(uptime)"
echo "== TRL GRPOTrainer, same shapes"
"$py" bench/trl/grpo_step.py --steps "$steps"
echo "== load: $(uptime)"
