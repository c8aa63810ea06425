#!/usr/bin/env bash
# Calibration (the stats pass end to end, through `fp4c quantize --calib`) and `fp4c eval` throughput on
# a synthetic checkpoint: tokens per second and peak RSS, median of REPEATS runs.
#
#   bench/calibrate_e2e.sh [PRESET] [REPEATS] [LAYERS]   e.g. bench/calibrate_e2e.sh qwen2.5-0.5b 3
#
# Env: BUILD (default build), WORK (default /tmp/fp4c-bench), THREADS (default 2), PRECISION (bf16),
# SAMPLES x SEQ_LEN tokens (16 x 512). LAYERS > 0 makes a shallower model of the same shape (peak RSS
# is per layer; tokens/s then counts those layers only).
# SMOKE=1: the tiny preset, one run, 4 x 64 tokens, in a temporary WORK: that the script still works
# (make test runs it so), not a figure.
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then
  set -- tiny 1 0; SAMPLES=4; SEQ_LEN=64; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
preset=${1:-qwen2.5-0.5b}
repeats=${2:-3}
layers=${3:-0}
build=${BUILD:-build}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
precision=${PRECISION:-bf16}
samples=${SAMPLES:-16}
seq_len=${SEQ_LEN:-512}
. "$(dirname "$0")/synth_setup.sh"
synth_setup "$build"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

cal=(); cal_rss=(); ev=(); ev_rss=()
for i in $(seq "$repeats"); do
  rm -rf "$work/out-cal"
  /usr/bin/time -f "%e %M" -o "$work/t.txt" "$build/fp4c" quantize --model "$model" --out "$work/out-cal" \
    --calib "$data" --precision "$precision" --threads "$threads" --quiet
  cal_s=$(python3 - "$work/out-cal/fp4c-manifest.json" <<'PY'
import json, sys
stages = {s["stage"]: s["wallSeconds"] for s in json.load(open(sys.argv[1]))["buildCost"]["stages"]}
if "stats" not in stages:
    sys.exit(f"the manifest has no 'stats' stage (stages: {', '.join(stages)})")
print(stages["stats"])
PY
)
  cal+=("$cal_s"); cal_rss+=("$(cut -d' ' -f2 "$work/t.txt")")
  /usr/bin/time -f "%e %M" -o "$work/t.txt" "$build/fp4c" eval --model "$model" --data "$data" \
    --precision "$precision" --threads "$threads" --json > "$work/eval.json"
  ev+=("$(python3 -c "import json; print(json.load(open('$work/eval.json'))['seconds'])")")
  ev_rss+=("$(cut -d' ' -f2 "$work/t.txt")")
done
c=$(printf '%s\n' "${cal[@]}" | median); e=$(printf '%s\n' "${ev[@]}" | median)
printf '%s, %d tokens, %s, %s threads\n' "$name" "$tokens" "$precision" "$threads"
printf 'calibration (stats pass): median %.2f s, %.0f tokens/s, peak RSS %.0f MiB\n' "$c" \
  "$(echo "$tokens / $c" | bc -l)" "$(printf '%s\n' "${cal_rss[@]}" | median | awk '{print $1/1024}')"
printf 'eval (reference, with lm_head): median %.2f s, %.0f tokens/s, peak RSS %.0f MiB\n' "$e" \
  "$(echo "$tokens / $e" | bc -l)" "$(printf '%s\n' "${ev_rss[@]}" | median | awk '{print $1/1024}')"
rm -rf "$work/out-cal"
