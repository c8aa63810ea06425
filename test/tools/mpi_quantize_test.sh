#!/usr/bin/env bash
# Data-parallel quantize under MPI (loopback, --oversubscribe): np 1, 2 and 3 give the same artifact
# bytes and manifest (timings aside) as one process, for plain, smoothquant, auto and GPTQ on the
# synthetic tiny model; compare at np 3 gives one process's artifacts and figures; a rank killed mid-run ends the job with an error naming it, within seconds;
# --checkpoint: a run killed mid-way, run again, gives the same bytes; a checkpoint of other options is
# refused by name. Skipped (exit 77) when fp4c was built without MPI or mpirun is missing.
set -euo pipefail
FP4C=${FP4C_BIN:-build/fp4c}
SYNTH=${FP4C_SYNTH_BIN:-build/fp4c-synth}
SRC=${FP4C_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
libs=$(ldd "$FP4C" 2>/dev/null || true)   # (not piped into grep -q: with pipefail, ldd's SIGPIPE would read as "no")
if [[ $libs != *libmpi* ]]; then
  echo "SKIP: $FP4C was built without MPI (apt-get install libopenmpi-dev openmpi-bin, then reconfigure)"
  exit 77
fi
if ! command -v mpirun >/dev/null; then
  echo "SKIP: no mpirun on PATH (apt-get install openmpi-bin)"
  exit 77
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Loopback only; ranks share the cores.
MPIRUN=(mpirun --oversubscribe --bind-to none --mca btl self,tcp --mca btl_tcp_if_include lo
        --mca oob_tcp_if_include lo)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$SYNTH" --preset tiny --layers 4 --out "$tmp/synth" --seed 3 >/dev/null
cp "$SRC/testdata/tokenizers/corpus.txt" "$tmp/calib.txt"
common=(quantize --model "$tmp/synth" --calib "$tmp/calib.txt" --threads 1 --packing chunks --seq-len 64
        --calib-samples 24 --seed 1)

# The artifact's files' digests, the manifest without what differs between runs (as guarantee.py).
digest() {
  python3 - "$1" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
for name in sorted(os.listdir(d)):
    p = os.path.join(d, name)
    if name == "fp4c-manifest.json":
        m = json.load(open(p))
        for k in ("commandLine", "modelDir", "buildCost", "createdUtc"):
            m.pop(k, None)
        m.get("options", {}).get("calibration", {}).pop("path", None)
        data = json.dumps(m, sort_keys=True).encode()
    else:
        data = open(p, "rb").read()
    print(name, hashlib.sha256(data).hexdigest()[:32])
PY
}

fail=0
check_same() {  # name, reference dir, dir
  if ! diff <(digest "$2") <(digest "$3") >"$tmp/diff.txt"; then
    echo "FAIL: $1: $3 differs from $2:"; cat "$tmp/diff.txt"; fail=1
  else
    echo "ok: $1"
  fi
}

for case in "recipe=plain" "recipe=smoothquant" "recipe=auto" "passes=stats{second_moments=true},gptq,blockscale,pack"; do
  if [[ $case == recipe=* ]]; then args=(--recipe "${case#recipe=}"); else args=(--passes "${case#passes=}"); fi
  tag=$(echo "$case" | tr -c 'a-z0-9' '_')
  "$FP4C" "${common[@]}" "${args[@]}" --quiet --out "$tmp/$tag-single"
  for np in 1 2 3; do
    start=$(date +%s.%N)
    "${MPIRUN[@]}" -np $np "$FP4C" "${common[@]}" "${args[@]}" --out "$tmp/$tag-np$np" 2>"$tmp/$tag-np$np.log" >/dev/null \
      || { echo "FAIL: $case np $np exited non-zero:"; cat "$tmp/$tag-np$np.log"; exit 1; }
    end=$(date +%s.%N)
    printf '%s np %d: %.2f s wall; %s\n' "$case" $np "$(echo "$end - $start" | bc)" \
      "$(grep -h 'bytes sent' "$tmp/$tag-np$np.log" | sed 's/fp4c quantize: //' | tr '\n' ';')"
    check_same "$case np $np" "$tmp/$tag-single" "$tmp/$tag-np$np"
  done
done

# compare under MPI: rank 0 evaluates and writes; the artifacts and figures are one process's.
cmp=(compare --model "$tmp/synth" --calib "$tmp/calib.txt" --eval "$tmp/calib.txt" --recipes plain,smoothquant
     --threads 1 --packing chunks --seq-len 64 --calib-samples 24 --eval-samples 8 --seed 1)
"$FP4C" "${cmp[@]}" --out "$tmp/compare-single" >"$tmp/compare-single.txt" 2>&1
"${MPIRUN[@]}" -np 3 "$FP4C" "${cmp[@]}" --out "$tmp/compare-np3" >"$tmp/compare-np3.txt" 2>&1 \
  || { echo "FAIL: compare np 3 exited non-zero:"; cat "$tmp/compare-np3.txt"; exit 1; }
for r in plain smoothquant; do
  check_same "compare np 3: artifact $r" "$tmp/compare-single/artifacts/$r" "$tmp/compare-np3/artifacts/$r"
done
figures() { grep -E '^(plain|smoothquant) +[0-9]' "$1" | awk '{$NF=""; print}'; grep '^BF16 reference' "$1"; }
if ! diff <(figures "$tmp/compare-single.txt") <(figures "$tmp/compare-np3.txt"); then
  echo "FAIL: compare np 3: other figures than one process's"; fail=1
else
  echo "ok: compare np 3: the same perplexities, recoveries, KL and top-1 as one process"
fi

# A rank that dies: the job ends non-zero within seconds and names it.
start=$(date +%s)
set +e
FP4C_TEST_KILL=1:3 timeout 120 "${MPIRUN[@]}" -np 3 -x FP4C_TEST_KILL "$FP4C" "${common[@]}" --recipe plain \
  --quiet --out "$tmp/killed" >"$tmp/killed.log" 2>&1
rc=$?
set -e
took=$(( $(date +%s) - start ))
if [ $rc -eq 0 ] || [ $rc -eq 124 ]; then
  echo "FAIL: a killed rank: exit $rc (0: not noticed, 124: hung)"; cat "$tmp/killed.log"; fail=1
elif ! grep -qE 'process rank 1 .*(exited|signal|killed|Killed)' "$tmp/killed.log"; then
  echo "FAIL: a killed rank: the message does not name rank 1:"; cat "$tmp/killed.log"; fail=1
elif [ -e "$tmp/killed" ]; then
  echo "FAIL: a killed run left an artifact"; fail=1
else
  echo "ok: a killed rank ends the job (exit $rc after ${took} s): $(grep -E 'process rank 1' "$tmp/killed.log" | head -1)"
fi

# --checkpoint: a run killed mid-way (FP4C_TEST_KILL=RANK:N: rank RANK dies at its N-th test point),
# run again, continues where it stopped and writes the same bytes, whatever the rank count.
gp="stats{second_moments=true},gptq,blockscale,pack"
ref="$tmp/$(echo "passes=$gp" | tr -c 'a-z0-9' '_')-single"
resume_case() {  # name, kill spec, np of the killed run ("" = no mpirun), np of the rerun ("" = no mpirun),
                 # what the rerun must say it took from the checkpoint
  local name=$1 kill=$2 np1=$3 np2=$4 expect=$5 ck="$tmp/ck-$1" out="$tmp/resumed-$1"
  local run1=("$FP4C") run2=("$FP4C")
  [ -n "$np1" ] && run1=("${MPIRUN[@]}" -np "$np1" -x FP4C_TEST_KILL "$FP4C")
  [ -n "$np2" ] && run2=("${MPIRUN[@]}" -np "$np2" "$FP4C")
  set +e
  FP4C_TEST_KILL=$kill timeout 120 "${run1[@]}" "${common[@]}" --passes "$gp" --quiet --checkpoint "$ck" --out "$out" \
    >"$tmp/$name-killed.log" 2>&1
  local rc=$?
  set -e
  if [ $rc -eq 0 ] || [ $rc -eq 124 ] || [ -e "$out" ]; then
    echo "FAIL: resume $name: the killed run exited $rc (artifact: $([ -e "$out" ] && echo yes || echo no))"
    cat "$tmp/$name-killed.log"; fail=1; return
  fi
  if ! "${run2[@]}" "${common[@]}" --passes "$gp" --checkpoint "$ck" --out "$out" >/dev/null 2>"$tmp/$name-resumed.log"; then
    echo "FAIL: resume $name: the rerun failed:"; cat "$tmp/$name-resumed.log"; fail=1; return
  fi
  if ! grep -q -- "--checkpoint: .*$expect" "$tmp/$name-resumed.log"; then
    echo "FAIL: resume $name: the rerun did not take anything from the checkpoint:"; cat "$tmp/$name-resumed.log"; fail=1
  fi
  echo "  $name: $(grep -- '--checkpoint: ' "$tmp/$name-resumed.log" | tr '\n' ' ')"
  check_same "resume $name" "$ref" "$out"
}
# Test points: the checkpoint check, the count of layers done, then per layer of the statistics 1 (one
# process) or 3 (gather, broadcast, its end); in pack the list of layers done, then per layer a gather and
# a broadcast once rank 0 saved it.
resume_case one-process-in-stats 0:4 "" "" "continuing at layer 2"
resume_case one-process-in-pack 0:10 "" "" "quantized Linears of layer(s) 0 "
resume_case np3-then-np2 1:6 3 2 "continuing at layer 1"
resume_case np2-then-one-process 1:18 2 "" "quantized Linears of layer(s) 0 "

# A checkpoint of other options is refused by name.
if "$FP4C" quantize --model "$tmp/synth" --calib "$tmp/calib.txt" --threads 1 --packing chunks --seq-len 64 \
     --calib-samples 24 --seed 2 --passes "$gp" --quiet --checkpoint "$tmp/ck-one-process-in-stats" \
     --out "$tmp/other" 2>"$tmp/other.log"; then
  echo "FAIL: a checkpoint made with --seed 1 was taken by a run with --seed 2"; fail=1
elif ! grep -q -- "--seed was '1', now '2'" "$tmp/other.log"; then
  echo "FAIL: the refusal does not name --seed:"; cat "$tmp/other.log"; fail=1
else
  echo "ok: other options refused: $(cat "$tmp/other.log")"
fi

if [ $fail -ne 0 ]; then exit 1; fi
echo "PASS"
