#!/usr/bin/env bash
# MoE calibration (the stats pass end to end, through `fp4c quantize --calib`) on a synthetic Qwen3-MoE: tokens per
# second and peak RSS, with each expert's statistics from its routed tokens (stats) and from every token through
# every expert (stats{all_experts=true}), median of REPEATS runs each.
#
#   bench/moe_calibrate.sh [PRESET] [REPEATS] [LAYERS]   default: qwen3-30b-a3b 1 2
#
# Env: BUILD (default build), WORK (default /tmp/fp4c-bench), THREADS (2), PRECISION (bf16), SAMPLES x SEQ_LEN
# tokens (16 x 512). tokens/s counts the LAYERS layers made (the preset's shape, fewer layers).
# SMOKE=1: the tiny-moe preset, one run, 4 x 64 tokens, in a temporary WORK (that the script works; not a figure).
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then
  set -- tiny-moe 1 2; SAMPLES=4; SEQ_LEN=64; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
preset=${1:-qwen3-30b-a3b}
repeats=${2:-1}
layers=${3:-2}
build=${BUILD:-build}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
precision=${PRECISION:-bf16}
samples=${SAMPLES:-16}
seq_len=${SEQ_LEN:-512}
name="$preset-${layers}l"
model=$work/$name
mkdir -p "$work"
[ -f "$model/config.json" ] || "$build/fp4c-synth" --preset "$preset" --out "$model" --layers "$layers"
data=$work/random-${samples}x${seq_len}.jsonl
python3 "$(dirname "$0")/random_ids.py" "$data" "$samples" "$seq_len"
tokens=$((samples * seq_len))
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
printf '%s, %d tokens, %s, %s threads\n' "$name" "$tokens" "$precision" "$threads"
for mode in routed all-experts; do
  stats=stats; [ "$mode" = all-experts ] && stats='stats{all_experts=true}'
  cal=(); rss=()
  for i in $(seq "$repeats"); do
    rm -rf "$work/out-moe"
    /usr/bin/time -f "%e %M" -o "$work/t.txt" "$build/fp4c" quantize --model "$model" --out "$work/out-moe" \
      --calib "$data" --passes "$stats,blockscale,pack" --precision "$precision" --threads "$threads" --quiet
    cal+=("$(python3 - "$work/out-moe/fp4c-manifest.json" <<'PY'
import json, sys
stages = {s["stage"]: s["wallSeconds"] for s in json.load(open(sys.argv[1]))["buildCost"]["stages"]}
print(stages["stats"])
PY
)")
    rss+=("$(cut -d' ' -f2 "$work/t.txt")")
  done
  c=$(printf '%s\n' "${cal[@]}" | median)
  printf 'calibration, %s: median %.2f s, %.0f tokens/s, peak RSS %.0f MiB\n' "$mode" "$c" \
    "$(echo "$tokens / $c" | bc -l)" "$(printf '%s\n' "${rss[@]}" | median | awk '{print $1/1024}')"
done
rm -rf "$work/out-moe"
