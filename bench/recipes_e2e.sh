#!/usr/bin/env bash
# Build time of each recipe against `plain` on the same model and calibration set, statistics reused
# from a warm --stats-cache (the issue's target: smoothquant at most 1.2x plain). Prints the median
# wall time of each recipe over REPEATS interleaved runs, and its ratio to plain's.
#
#   bench/recipes_e2e.sh [PRESET] [REPEATS] [RECIPES]     e.g. bench/recipes_e2e.sh qwen2.5-0.5b 5 "plain smoothquant best"
#
# Env: BUILD (default build), WORK (default /tmp/fp4c-bench), THREADS (default 2), CALIB (default
# testdata/tokenizers/corpus.txt, 16 chunks of 512 tokens), OUT (where the artifacts go; default WORK).
# On a VM whose disk writes cost a system time that swings by a second from run to run (this one:
# 0.3-1.9 s for the same 300 MB artifact, whichever recipe wrote it), OUT=/dev/shm/fp4c-bench measures the
# recipes' own work: the artifact bytes are the same for every recipe, only the medium differs.
# Even on tmpfs the system time of identical runs swings (0.40-1.24 s for the same recipe, with the same
# syscall counts and page faults: `strace -c`, `perf stat`), and a sample's median can land on the slow
# runs of either recipe (two 7- and 9-run samples: smoothquant/plain 1.01x and 1.51x). The noise only
# ever adds time, so the best of the runs is the robust estimate of a recipe's own cost: the script
# prints the ratio of the best runs too, and that is the figure the target is checked against.
# SMOKE=1: the tiny preset, one run of plain and smoothquant, 4 chunks of 64 tokens, in a temporary
# WORK: that the script still works (make test runs it so), not a figure.
set -euo pipefail
chunks=16; chunk_len=512
if [ "${SMOKE:-0}" = 1 ]; then
  set -- tiny 1 "plain smoothquant"; chunks=4; chunk_len=64; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
preset=${1:-qwen2.5-0.5b}
repeats=${2:-5}
recipes=${3:-plain smoothquant best}
build=${BUILD:-build}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
calib=${CALIB:-testdata/tokenizers/corpus.txt}
model=$work/$preset
out=${OUT:-$work}
mkdir -p "$work" "$out"
if [ ! -f "$model/config.json" ]; then
  echo "generating $preset into $model"
  "$build/fp4c-synth" --preset "$preset" --out "$model"
fi
cache=$work/stats-cache-recipes
set_opts=(--calib "$calib" --packing chunks --seq-len "$chunk_len" --calib-samples "$chunks" --seed 1 --stats-cache "$cache"
          --threads "$threads" --quiet --force)
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
best() { sort -g | head -n 1; }
now() { date +%s.%N; }

echo "warming the statistics cache (each recipe once; the smoothed model's statistics are computed here)"
for r in $recipes; do "$build/fp4c" quantize --model "$model" --out "$out/out-$r" --recipe "$r" "${set_opts[@]}"; done

# Wall time, CPU time (user + system) and user time alone: the system time of writing the artifact into
# the page cache swings by 1 s from run to run on a shared VM, the same for every recipe.
declare -A times cpus users
for i in $(seq "$repeats"); do
  for r in $recipes; do
    cat "$model"/*.safetensors > /dev/null
    rm -rf "$out/out-$r"; sync   # no earlier run's writeback during this one
    t0=$(now)
    /usr/bin/time -f "%U %S" -o "$work/time.txt" \
      "$build/fp4c" quantize --model "$model" --out "$out/out-$r" --recipe "$r" "${set_opts[@]}"
    t1=$(now)
    times[$r]+="$(echo "$t1 - $t0" | bc -l) "
    cpus[$r]+="$(awk '{print $1 + $2}' "$work/time.txt") "
    users[$r]+="$(awk '{print $1}' "$work/time.txt") "
  done
done
base=$(printf '%s\n' ${times[plain]} | median)
base_cpu=$(printf '%s\n' ${cpus[plain]} | median)
base_user=$(printf '%s\n' ${users[plain]} | median)
base_best=$(printf '%s\n' ${times[plain]} | best)
base_best_cpu=$(printf '%s\n' ${cpus[plain]} | best)
for r in $recipes; do
  m=$(printf '%s\n' ${times[$r]} | median)
  c=$(printf '%s\n' ${cpus[$r]} | median)
  u=$(printf '%s\n' ${users[$r]} | median)
  b=$(printf '%s\n' ${times[$r]} | best)
  bc_=$(printf '%s\n' ${cpus[$r]} | best)
  printf '%-12s median %.3f s wall (%.2fx plain), %.3f s CPU (%.2fx), %.3f s user (%.2fx); best %.3f s wall (%.2fx plain), %.3f s CPU (%.2fx); %s runs  (pipeline: %s)\n' \
    "$r" "$m" "$(echo "$m / $base" | bc -l)" "$c" "$(echo "$c / $base_cpu" | bc -l)" "$u" \
    "$(echo "$u / $base_user" | bc -l)" "$b" "$(echo "$b / $base_best" | bc -l)" "$bc_" \
    "$(echo "$bc_ / $base_best_cpu" | bc -l)" "$repeats" \
    "$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['options']['pipeline'])" \
        "$out/out-$r/fp4c-manifest.json")"
done
for r in $recipes; do rm -rf "$out/out-$r"; done
