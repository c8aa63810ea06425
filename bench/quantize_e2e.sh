#!/usr/bin/env bash
# End-to-end W4A16 quantization throughput on a synthetic checkpoint, against copying the same
# checkpoint directory on the same disk, measured in the same run. Prints medians and the ratio.
#
#   bench/quantize_e2e.sh [PRESET] [REPEATS]        e.g. bench/quantize_e2e.sh qwen2.5-0.5b 3
#
# Env: BUILD (default build), WORK (default /tmp/fp4c-bench), THREADS (default "1 2").
# The checkpoint is generated once by fp4c-synth and kept in $WORK; both the copy and the quantizer
# read it from the page cache when it fits in memory (both see the same cache state: each timing is
# preceded by a full read of the checkpoint).
# SMOKE=1: the tiny preset, one run, in a temporary WORK: that the script still works (make test runs
# it so), not a figure.
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then
  set -- tiny 1; THREADS=2; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
preset=${1:-qwen2.5-0.5b}
repeats=${2:-3}
build=${BUILD:-build}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-1 2}
model=$work/$preset
mkdir -p "$work"
if [ ! -f "$model/config.json" ]; then
  echo "generating $preset into $model"
  "$build/fp4c-synth" --preset "$preset" --out "$model"
fi
bytes=$(du -sb --apparent-size "$model" | cut -f1)
echo "checkpoint: $model, $bytes bytes"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
warm() { cat "$model"/*.safetensors > /dev/null; }
now() { date +%s.%N; }

copy_times=()
for i in $(seq "$repeats"); do
  rm -rf "$work/copy"; warm; sync
  t0=$(now); cp -r "$model" "$work/copy"; sync; t1=$(now)
  copy_times+=("$(echo "$t1 - $t0" | bc -l)")
done
rm -rf "$work/copy"
copy=$(printf '%s\n' "${copy_times[@]}" | median)
printf 'copy (cp -r + sync): median %.3f s, %.2f GB/s\n' "$copy" "$(echo "$bytes / $copy / 1000000000" | bc -l)"

for t in $threads; do
  times=(); rss=(); proc=()
  for i in $(seq "$repeats"); do
    rm -rf "$work/out"; warm; sync
    t0=$(now)
    /usr/bin/time -v -o "$work/time.txt" "$build/fp4c" quantize --model "$model" --out "$work/out" \
      --threads "$t" --quiet
    tp=$(now); sync; t1=$(now)
    times+=("$(echo "$t1 - $t0" | bc -l)")
    proc+=("$(echo "$tp - $t0" | bc -l)")
    rss+=("$(awk -F: '/Maximum resident/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")")
  done
  q=$(printf '%s\n' "${times[@]}" | median)
  p=$(printf '%s\n' "${proc[@]}" | median)
  r=$(printf '%s\n' "${rss[@]}" | median)
  printf 'fp4c quantize --threads %s (process only, output in the page cache): median %.3f s, %.2f GB/s of input\n' \
    "$t" "$p" "$(echo "$bytes / $p / 1000000000" | bc -l)"
  printf 'fp4c quantize --threads %s (+ sync): median %.3f s, %.2f GB/s of input, peak RSS %.0f MiB, %.2fx the copy time\n' \
    "$t" "$q" "$(echo "$bytes / $q / 1000000000" | bc -l)" "$(echo "$r / 1024" | bc -l)" "$(echo "$q / $copy" | bc -l)"
done
rm -rf "$work/out"
