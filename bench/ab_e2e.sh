#!/usr/bin/env bash
# Two builds of fp4c back to back on one synthetic model, alternating A B A B ... so that both see the
# same load: calibration (the stats stage of `fp4c quantize --calib`: wall and CPU seconds, user+sys,
# from the manifest's build cost) and `fp4c eval` (wall from its JSON, CPU user+sys of the process),
# median of REPEATS runs each. On a shared, loaded machine the CPU seconds are the figure to compare;
# tokens/s are printed from both (tokens / wall, and tokens / (CPU / THREADS): what the run would take
# with its threads to itself).
#
#   bench/ab_e2e.sh BUILD_A BUILD_B [PRESET] [REPEATS] [LAYERS]   e.g. bench/ab_e2e.sh /tmp/base/build build qwen2.5-0.5b 3
#
# Env as bench/calibrate_e2e.sh: WORK (/tmp/fp4c-bench), THREADS (2), PRECISION (bf16), SAMPLES x SEQ_LEN
# (16 x 512). SMOKE=1: BUILD (build) against itself, the tiny preset, one run of 4 x 64 tokens, in a
# temporary WORK (that the script still works; not a figure). The model is made with BUILD_B's fp4c-synth. ARTIFACT=1: eval measures the W4A4 artifact
# the same build's calibration run just wrote against the reference (two forwards, two heads).
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then
  set -- "${BUILD:-build}" "${BUILD:-build}" tiny 1 0; SAMPLES=4; SEQ_LEN=64; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
a=${1:?BUILD_A}; b=${2:?BUILD_B}
preset=${3:-qwen2.5-0.5b}
repeats=${4:-3}
layers=${5:-0}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
precision=${PRECISION:-bf16}
samples=${SAMPLES:-16}
seq_len=${SEQ_LEN:-512}
. "$(dirname "$0")/synth_setup.sh"
synth_setup "$b"
results=$work/ab-results.txt
: > "$results"
for ((i = 0; i < repeats; i++)); do
  for side in A B; do
    build=$a; [ "$side" = B ] && build=$b
    rm -rf "$work/out-ab"
    "$build/fp4c" quantize --model "$model" --out "$work/out-ab" --calib "$data" --precision "$precision" \
      --threads "$threads" --quiet
    python3 -c "
import json, sys
s = {x['stage']: x for x in json.load(open('$work/out-ab/fp4c-manifest.json'))['buildCost']['stages']}['stats']
print('$side cal', s['wallSeconds'], s['cpuSeconds'])" >> "$results"
    artifact=(); [ "${ARTIFACT:-0}" = 1 ] && artifact=(--artifact "$work/out-ab" --no-manifest)
    /usr/bin/time -f "%U %S" -o "$work/t-ab.txt" "$build/fp4c" eval --model "$model" --data "$data" \
      "${artifact[@]}" --precision "$precision" --threads "$threads" --json > "$work/ab-eval.json"
    rm -rf "$work/out-ab"
    python3 -c "
import json
wall = json.load(open('$work/ab-eval.json'))['seconds']
u, s = map(float, open('$work/t-ab.txt').read().split()[-2:])
print('$side eval', wall, u + s)" >> "$results"
    tail -2 "$results"
  done
done
python3 - "$results" "$tokens" "$threads" "$name" <<'PY'
import statistics, sys
path, tokens, threads, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
runs = {}
for line in open(path):
    side, what, wall, cpu = line.split()
    runs.setdefault((side, what), []).append((float(wall), float(cpu)))
print(f"{name}, {tokens} tokens, {threads} threads; median of {len(runs[('A', 'cal')])} (A then B alternating)")
for what, label in (("cal", "calibration (stats stage)"), ("eval", "eval (process CPU)")):
    for side in "AB":
        r = runs[(side, what)]
        wall = statistics.median(w for w, _ in r)
        cpu = statistics.median(c for _, c in r)
        print(f"  {label:26s} {side}: wall {wall:7.2f} s ({tokens / wall:6.0f} tok/s)  "
              f"CPU {cpu:7.2f} s ({tokens / (cpu / threads):6.0f} tok/s at {threads} threads)")
PY
