#!/usr/bin/env bash
# `fp4c quantize --scheme w4a16` from a GGUF against the same from its BF16 safetensors conversion, in the
# same run, alternating, each input read once before every timing (page cache warm). Prints the medians and
# the ratio GGUF / safetensors (issue 16 asks for at most 1.5).
#
#   bench/gguf_e2e.sh FILE.gguf BF16_DIR [REPEATS]
#
# For SmolLM2-135M-Instruct: scripts/fetch_smollm2.sh build/models/smollm2 gives the GGUF;
# ../shared/models/smollm2/convert_with_transformers.py the BF16 directory. Env: BUILD (default build),
# THREADS (default: all cores).
set -euo pipefail
gguf=${1:?usage: gguf_e2e.sh FILE.gguf BF16_DIR [REPEATS]}
bf16=${2:?usage: gguf_e2e.sh FILE.gguf BF16_DIR [REPEATS]}
repeats=${3:-5}
build=${BUILD:-build}
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
run() {  # INPUT WARM_FILES...: wall seconds of one quantize
  local input=$1; shift
  cat "$@" > /dev/null
  rm -rf "$work/out"
  local t0 t1
  t0=$(now)
  "$build/fp4c" quantize --model "$input" --scheme w4a16 --out "$work/out" "${threads[@]}" > "$work/log" 2>&1 \
    || { cat "$work/log"; exit 1; }
  t1=$(now)
  echo "$t1 - $t0" | bc -l
}

g=() s=()
for i in $(seq "$repeats"); do
  g+=("$(run "$gguf" "$gguf")")
  s+=("$(run "$bf16" "$bf16"/*.safetensors)")
done
gm=$(printf '%s\n' "${g[@]}" | median)
sm=$(printf '%s\n' "${s[@]}" | median)
echo "gguf:        ${g[*]} s (median $gm)"
echo "safetensors: ${s[*]} s (median $sm)"
printf 'ratio gguf / safetensors: %.2f\n' "$(echo "$gm / $sm" | bc -l)"
