#!/usr/bin/env bash
# Where the CPU runtime's time goes: one calibration (the stats pass, through `fp4c quantize --calib`)
# and one `fp4c eval` on a synthetic checkpoint, with fp4c's stage timers on (FP4C_PROFILE=1), printing
# per run the wall seconds of each kind of work, the share in matrix multiplies against the rest, and
# tokens/s against llama.cpp's anchors in ../shared/models/README.md (full-depth runs only); first, which kernels
# oneDNN picked for the matrix multiplies (AMX or AVX-512 BF16: the issue's targets differ by path).
#
#   bench/profile.sh [PRESET] [LAYERS]     e.g. bench/profile.sh qwen2.5-0.5b, bench/profile.sh qwen2.5-0.5b 4
#
# Env as bench/calibrate_e2e.sh: BUILD (build), WORK (/tmp/fp4c-bench), THREADS (2), PRECISION (bf16),
# SAMPLES x SEQ_LEN (16 x 512). SMOKE=1: the tiny preset, 4 x 64 tokens, that the script still works.
#
# The timers are wall time of the calling thread around each runtime call (their sum over a run is at
# most its wall time), except the attention's GEMMs, which run inside the OpenMP team one block per
# thread: those are thread-seconds, counted as thread-seconds / THREADS of wall. "gemm" is the Linears'
# GEMMs (lm_head included); "linear_prepare" the weights' conversion into the GEMM's layout.
# PERF=1: both runs under `perf record` as well, then each one's per-symbol share of CPU time with what
# each symbol is (bench/perf_shares.py; on a shared machine the CPU shares hold where wall time does not).
set -euo pipefail
if [ "${SMOKE:-0}" = 1 ]; then
  set -- tiny 0; SAMPLES=4; SEQ_LEN=64; WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
fi
preset=${1:-qwen2.5-0.5b}
layers=${2:-0}
build=${BUILD:-build}
work=${WORK:-/tmp/fp4c-bench}
threads=${THREADS:-2}
precision=${PRECISION:-bf16}
samples=${SAMPLES:-16}
seq_len=${SEQ_LEN:-512}
. "$(dirname "$0")/synth_setup.sh"
synth_setup "$build"
grep -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ' | sed 's/^/cpu features: /; s/$/\n/'
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
# Which kernels oneDNN picked (AMX, AVX-512 BF16, ...): a short verbose run on the first 64 tokens.
head -1 "$data" | python3 -c "import json, sys; print(json.dumps({'input_ids': json.loads(sys.stdin.readline())['input_ids'][:64]}))" \
  > "$work/prof-isa.jsonl"
ONEDNN_VERBOSE=1 DNNL_VERBOSE=1 "$build/fp4c" eval --model "$model" --data "$work/prof-isa.jsonl" --precision "$precision" \
  --threads "$threads" --json 2>&1 | awk -F, '/_verbose,info,cpu,isa:/ {sub(/.*isa:/, ""); print "oneDNN isa: " $0}
    /_verbose,exec,cpu,matmul,/ {n[$5]++} END {for (k in n) printf "oneDNN matmul kernel: %s (%d calls)\n", k, n[k]}'

rm -rf "$work/out-prof"
perf_cal=(); perf_eval=()
if [ "${PERF:-0}" = 1 ]; then
  perf_cal=(perf record -q -F 999 -o "$work/perf-cal.data"); perf_eval=(perf record -q -F 999 -o "$work/perf-eval.data")
fi
FP4C_PROFILE=1 /usr/bin/time -f "%e %M" -o "$work/t-cal.txt" "${perf_cal[@]}" "$build/fp4c" quantize --model "$model" \
  --out "$work/out-prof" --calib "$data" --precision "$precision" --threads "$threads" --quiet 2> "$work/prof-cal.txt"
FP4C_PROFILE=1 /usr/bin/time -f "%e %M" -o "$work/t-eval.txt" "${perf_eval[@]}" "$build/fp4c" eval --model "$model" --data "$data" \
  --precision "$precision" --threads "$threads" --json > "$work/prof-eval.json" 2> "$work/prof-eval.txt"

python3 - "$work" "$tokens" "$threads" "$layers" "$name" "$precision" <<'PY'
import json, sys
work, tokens, threads, layers, name, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
# llama.cpp on the qwen2.5-0.5b shape (vocab 32000), 2 threads, 8192 tokens (../shared/models/README.md).
anchors = {"bf16": (165, 189), "f32": (204, 255)}

def timers(path):
    t = {}
    for line in open(path):
        p = line.split()
        if len(p) == 4 and p[0] == "profile":
            t[p[1]] = float(p[2])
    return t

def show(what, wall, t, rss_kib, anchor):
    att_gemm = t.get("attention_gemm_thread", 0.0) / threads
    parts = [("Linear GEMMs", t.get("gemm", 0.0)),
             ("weight conversion", t.get("linear_prepare", 0.0)),
             ("attention GEMMs", att_gemm),
             ("attention rest (softmax, RoPE, packing)", max(t.get("attention", 0.0) - att_gemm, 0.0)),
             ("RMSNorm", t.get("norm", 0.0)),
             ("residual, SiLU*up", t.get("elementwise", 0.0)),
             ("BF16 rounding", t.get("convert", 0.0)),
             ("statistics hooks", t.get("stats", 0.0)),
             ("log-softmax, figures", t.get("log_softmax", 0.0))]
    rest = wall - sum(v for _, v in parts)
    tps = tokens / wall
    print(f"{what}: {wall:.2f} s, {tps:.0f} tokens/s, peak RSS {rss_kib / 1024:.0f} MiB")
    for label, v in parts + [("other (untimed)", rest)]:
        if v > 0.0005 or label.startswith("other"):
            print(f"  {label:46s} {v:8.3f} s  {100 * v / wall:5.1f}%")
    gemm = parts[0][1] + parts[2][1]
    print(f"  GEMM share {100 * gemm / wall:.1f}%, the rest {100 * (wall - gemm) / wall:.1f}%")
    if layers == 0 and name.startswith("qwen2.5-0.5b") and precision in anchors:
        print(f"  vs llama.cpp's {anchor[0]} ({anchor[1]} tokens/s, vocab 32000): {tps / anchor[1]:.2f}x")
    elif layers:
        print(f"  ({layers} layers only: no llama.cpp ratio)")

print(f"{name}, {tokens} tokens, {precision}, {threads} threads")
man = json.load(open(f"{work}/out-prof/fp4c-manifest.json"))
stats = {s["stage"]: s["wallSeconds"] for s in man["buildCost"]["stages"]}["stats"]
a = anchors.get(precision, (0, 0))
show("calibration (stats stage)", stats, timers(f"{work}/prof-cal.txt"),
     float(open(f"{work}/t-cal.txt").read().split()[1]), ("llama-imatrix " + precision, a[0]))
ev = json.load(open(f"{work}/prof-eval.json"))["seconds"]
show("eval (reference, with lm_head)", ev, timers(f"{work}/prof-eval.txt"),
     float(open(f"{work}/t-eval.txt").read().split()[1]), ("llama-perplexity " + precision, a[1]))
PY
rm -rf "$work/out-prof"
if [ "${PERF:-0}" = 1 ]; then
  python3 "$(dirname "$0")/perf_shares.py" "$work/perf-cal.data" 25
  python3 "$(dirname "$0")/perf_shares.py" "$work/perf-eval.data" 25
fi
