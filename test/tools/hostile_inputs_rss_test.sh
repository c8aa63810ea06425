#!/usr/bin/env bash
# Hostile inputs that used to run fp4c out of memory: each must be a clear error (exit 1, the file
# and the limit named) with peak RSS under 2 GB.
#   - a 2 GB line in a plain-text and a JSONL calibration file (sparse files: no disk used)
#   - a gzip bomb: 10 GB of text in ~10 MB (one 100 MB member, repeated)
#   - a safetensors header of 100 MB of '[' (just under the format's limit)
set -euo pipefail
FP4C=${FP4C_BIN:-build/fp4c}
SYNTH=${FP4C_SYNTH_BIN:-build/fp4c-synth}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
limit_kib=$((2 * 1024 * 1024))
failures=0

"$SYNTH" --preset tiny --out "$tmp/model" > /dev/null

# expect_error NAME EXPECTED-TEXT CMD...: exit 1, EXPECTED-TEXT in the output, peak RSS < 2 GB.
expect_error() {
  local name=$1 expected=$2
  shift 2
  local report
  report=$(python3 - "$@" <<'EOF'
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(r.stdout[-2000:])
EOF
)
  local code rss
  read -r code rss <<< "$(head -n1 <<< "$report")"
  local out
  out=$(tail -n +2 <<< "$report")
  printf '%-28s exit %s, peak RSS %6d MiB: %s\n' "$name" "$code" $((rss / 1024)) "$(head -c 200 <<< "$out" | tr '\n' ' ')"
  if [ "$code" != 1 ]; then echo "FAIL $name: exit $code (expected 1)"; failures=$((failures + 1)); fi
  if [ "$rss" -ge "$limit_kib" ]; then echo "FAIL $name: peak RSS $rss KiB >= 2 GiB"; failures=$((failures + 1)); fi
  if ! grep -qF -- "$expected" <<< "$out"; then echo "FAIL $name: output lacks '$expected'"; failures=$((failures + 1)); fi
  if [ -e "$tmp/out" ]; then echo "FAIL $name: wrote $tmp/out"; failures=$((failures + 1)); rm -rf "$tmp/out"; fi
}

truncate -s 2G "$tmp/line.txt"
expect_error "2 GB line (text)" "$tmp/line.txt: holds more than 268435456 bytes of text" \
  "$FP4C" quantize --model "$tmp/model" --out "$tmp/out" --calib "$tmp/line.txt"
truncate -s 2G "$tmp/line.jsonl"
expect_error "2 GB line (JSONL)" "--max-calib-bytes" \
  "$FP4C" eval --model "$tmp/model" --data "$tmp/line.jsonl"

head -c 100000000 /dev/zero | tr '\0' 'a' | gzip -1 > "$tmp/member.gz"
for _ in $(seq 100); do cat "$tmp/member.gz"; done > "$tmp/bomb.txt.gz"
echo "gzip bomb: $(stat -c %s "$tmp/bomb.txt.gz") bytes, 10000000000 decompressed"
expect_error "gzip bomb (10 GB)" "$tmp/bomb.txt.gz: decompresses to more than 268435456 bytes of text" \
  "$FP4C" quantize --model "$tmp/model" --out "$tmp/out" --calib "$tmp/bomb.txt.gz"

mkdir -p "$tmp/deep"
cp "$tmp/model/config.json" "$tmp/deep/"
python3 - "$tmp/deep/model.safetensors" <<'EOF'
import struct, sys
n = 99_999_999
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", n))
    f.write(b"[" * n)
EOF
expect_error "100 MB header of [" "header is not valid JSON at file offset 72: nested deeper than 64 levels" \
  "$FP4C" quantize --model "$tmp/deep" --out "$tmp/out" --scheme w4a16

if [ "$failures" -ne 0 ]; then echo "$failures failure(s)"; exit 1; fi
echo "all hostile inputs refused within 2 GiB"
