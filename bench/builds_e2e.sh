#!/usr/bin/env bash
# Two builds of fp4c on the same work, interleaved: the median wall time of each, and the ratio new/old.
# For "no slowdown" claims of a refactor (same artifacts, same machine, same run).
#
#   bench/builds_e2e.sh OLD_BUILD NEW_BUILD [PRESET] [REPEATS] [LAYERS]   e.g. ... /tmp/old/build build qwen2.5-0.5b 5 3
#
# Env: WORK (default /tmp/fp4c-bench), THREADS (2), RECIPES ("plain smoothquant", each on 16 x 512 tokens of
# testdata/tokenizers/corpus.txt, statistics computed in every run), plus an uncalibrated W4A16 run.
set -euo pipefail
old=$1; new=$2
preset=${3:-qwen2.5-0.5b}
repeats=${4:-5}
layers=${5:-3}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
recipes=${RECIPES-plain smoothquant}
model=$work/$preset-${layers}l
mkdir -p "$work"
[ -f "$model/config.json" ] || "$new/fp4c-synth" --preset "$preset" --layers "$layers" --out "$model" > /dev/null
calib=testdata/tokenizers/corpus.txt
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
declare -A t
cases=("w4a16:--scheme w4a16")
for r in $recipes; do cases+=("$r:--recipe $r --calib $calib --packing chunks --seq-len 512 --calib-samples 16 --seed 1"); done
for i in $(seq "$repeats"); do
  for c in "${cases[@]}"; do
    name=${c%%:*}; args=${c#*:}
    for b in old new; do
      dir=$old; [ $b = new ] && dir=$new
      rm -rf "$work/out-builds"
      t0=$(now)
      # shellcheck disable=SC2086
      "$dir/fp4c" quantize --model "$model" --out "$work/out-builds" --threads "$threads" --quiet $args
      t1=$(now)
      t[$name-$b]+="$(echo "$t1 - $t0" | bc -l) "
    done
  done
done
for c in "${cases[@]}"; do
  name=${c%%:*}
  o=$(printf '%s\n' ${t[$name-old]} | median); n=$(printf '%s\n' ${t[$name-new]} | median)
  printf '%-12s old median %.3f s, new median %.3f s, new/old %.3f  (%s runs each)\n' "$name" "$o" "$n" \
    "$(echo "$n / $o" | bc -l)" "$repeats"
done
rm -rf "$work/out-builds"
