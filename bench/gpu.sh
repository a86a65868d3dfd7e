#!/usr/bin/env bash
# Speed and peak memory of decode and of one GRPO step, with seeded random weights in the real
# shapes (`recode model random`): the real checkpoints cannot travel to a lent GPU machine, and
# speed and memory depend on the shapes, not on the values. Prints one table at the end.
#
#   bash bench/gpu.sh           # a CUDA machine, no network: Qwen2.5-0.5B and -7B shapes (under 10 min)
#   bash bench/gpu.sh --tiny    # the CPU, a tiny shape, seconds: what CI runs (tests/gpu_script.rs)
#
# RECODE names the binary (default: target/release/recode, else target/debug/recode). WORK is
# where the random models go (default: a temporary folder, removed at the end).
# Rows: decode tokens/s at batch 1, 8 and 64 (0.5B shape, 64 new tokens after a 128-token prompt)
# and one GRPO step of DoRA GRPO (0.5B: experiments/recode-grpo-0.5b.toml's settings; 7B:
# experiments/recode-grpo-7b.toml's, bf16, DoRA r64, prompts up to 2048 and completions of 1024
# tokens, micro-batch 4). Each row's peak memory: the device's (nvidia-smi, sampled every 100 ms)
# on CUDA, the process's resident high-water mark on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

tiny=0
case "${1:-}" in
  --tiny) tiny=1 ;;
  "") ;;
  *) echo "usage: bash bench/gpu.sh [--tiny]" >&2; exit 2 ;;
esac

recode="${RECODE:-}"
if [[ -z "$recode" ]]; then
  for c in target/release/recode target/debug/recode; do
    [[ -x "$c" ]] && { recode="$c"; break; }
  done
fi
[[ -n "$recode" && -x "$recode" ]] || { echo "bench/gpu.sh: no recode binary (build with cargo build --release, or set RECODE)" >&2; exit 1; }

work="${WORK:-}"
if [[ -z "$work" ]]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
rows="$work/rows.tsv"
: > "$rows"

if (( tiny )); then
  backend=cpu; precision=f32; dtype=f32; small=tiny; big=""
  decode_tokens=8; prompt_tokens=32
  # A few tokens per completion, four completions: seconds on two cores.
  small_sets=(--set generation.max_new_tokens=8 --set generation.num_generations=4 --set training.micro_batch_size=4
              --set prompt.max_prompt_tokens=4096)
else
  command -v nvidia-smi >/dev/null || { echo "bench/gpu.sh: nvidia-smi not found; on a CPU use --tiny" >&2; exit 1; }
  backend=cuda; precision=bf16; dtype=bf16; small=qwen2.5-0.5b; big=qwen2.5-7b
  decode_tokens=64; prompt_tokens=128
  small_sets=()
fi

# Runs "$@" with its output in $work/last.log; sets $peak to the peak memory in GiB.
measure() {
  local log="$work/last.log" mem="$work/mem.txt"
  : > "$mem"
  if [[ "$backend" == cuda ]]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$mem" &
    local smi=$!
    "$@" > "$log" 2>&1 || { kill "$smi" 2>/dev/null; cat "$log" >&2; return 1; }
    kill "$smi" 2>/dev/null || true
    wait "$smi" 2>/dev/null || true
    peak=$(awk 'BEGIN{m=0} {if ($1+0>m) m=$1+0} END{printf "%.1f GiB (device)", m/1024}' "$mem")
  else
    "$@" > "$log" 2>&1 &
    local pid=$! hwm=0 v
    while kill -0 "$pid" 2>/dev/null; do
      v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
      [[ -n "$v" ]] && (( v > hwm )) && hwm=$v
      sleep 0.1
    done
    wait "$pid" || { cat "$log" >&2; return 1; }
    peak=$(awk -v k="$hwm" 'BEGIN{printf "%.2f GiB (resident)", k/1048576}')
  fi
  cat "$log"
}

echo "== random weights: $small${big:+ and $big} ($dtype) in $work"
"$recode" model random --shape "$small" --dtype "$dtype" --out "$work/$small"
[[ -n "$big" ]] && "$recode" model random --shape "$big" --dtype "$dtype" --out "$work/$big"

echo "== decode, $small shape"
measure "$recode" bench generate --model "$work/$small" --backend "$backend" --batch 1,8,64 \
  --new-tokens "$decode_tokens" --prompt-tokens "$prompt_tokens" --repeats 1
# Rows of bench generate's table: batch, prompt, prefill t/s, decode t/s, ...
awk -v s="$small" -v b="$backend" -v p="$peak" '$1 ~ /^[0-9]+$/ && NF >= 4 {
  printf "decode, batch %s\t%s\t%s f32\t%s tokens/s\t%s\n", $1, s, b, $4, p }' "$work/last.log" >> "$rows"

# One GRPO step (the first, with its warm-up, and a second) through `recode bench step`.
step() {
  local shape="$1" spec="$2"; shift 2
  echo "== GRPO step, $shape shape ($spec)"
  measure "$recode" bench step "$spec" --steps 2 --set "model.path=\"$work/$shape\"" --set 'model.id=""' \
    --set 'data.path="data/sample-migrations.jsonl"' --set "backend.kind=\"$backend\"" \
    --set "backend.precision=\"$precision\"" --set heldout.every=0 "$@"
  # bench step's "step" line: step 1 seconds, then the later steps' mean.
  awk -v s="$shape" -v b="$backend $precision" -v p="$peak" -v spec="$spec" '$1 == "step" {
    printf "GRPO step (%s)\t%s\t%s\t%s s (step 1: %s s)\t%s\n", spec, s, b, $NF, $2, p }' "$work/last.log" >> "$rows"
}
step "$small" experiments/recode-grpo-0.5b.toml "${small_sets[@]}"
[[ -n "$big" ]] && step "$big" experiments/recode-grpo-7b.toml

echo
echo "| measurement | shape | backend | result | peak memory |"
echo "|---|---|---|---|---|"
awk -F '\t' '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }' "$rows"
