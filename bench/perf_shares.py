#!/usr/bin/env python3
"""Per-symbol shares of CPU time in a `perf record` of fp4c, each symbol with what it is.

    perf record -F 999 -o cal.data build/fp4c quantize ... ; bench/perf_shares.py cal.data [TOP]

oneDNN's generated code (one "[JIT] tid N" object per thread in perf's eyes) is summed into one line, so is
libgomp. Shares are of CPU samples (user and, where perf may read them, kernel), not of wall time: on a
shared machine they hold while wall time does not. bench/profile.sh runs it on calibration and eval.
"""
import collections
import re
import subprocess
import sys

# (pattern on "dso: symbol", what it is). First match wins.
KINDS = [
    (r"^\[JIT\]", "GEMM: oneDNN's generated kernels (Linear and attention matmuls, weight reorders)"),
    (r"libdnnl", "oneDNN library code (primitive creation, reorder drivers)"),
    (r"libgomp", "OpenMP runtime: threads spinning while they wait at barriers (idle time, as CPU)"),
    (r"softmax_row", "attention softmax (vectorized, fp4c's exp)"),
    (r"run_attention.*lambda\(float const\*, long", "RoPE rotation and packing of q/k/v for the attention GEMMs"),
    (r"run_attention", "attention driver (output copy, task loop)"),
    (r"sincos|__sin|__cos", "RoPE tables (libm sin/cos, per layer)"),
    (r"silu_mul_chunk|gelu_tanh_mul_chunk", "SiLU(gate) * up"),
    (r"fold_strip|accumulate_channel_stats", "per-channel statistics (the stats hooks)"),
    (r"second_moment", "second moments (float64)"),
    (r"rms_row_scale|rms_scale_row|rms_norm", "RMSNorm"),
    (r"bf16_chunk|round_to_bf16", "BF16 rounding of GEMM inputs"),
    (r"add_chunk", "residual add"),
    (r"fake_quantize|quantize_row_input|activation_quant", "W4A4 input fake quantization"),
    (r"log_sum_exp|sum_exp|row_max|exp_f64", "eval: log-sum-exp of each row of logits (vectorized, reference alone)"),
    (r"quant::.*log_softmax|quant::evaluate", "eval with an artifact: log-softmax, KL, top-1 per row (scalar loops)"),
    (r"libm.*(__ieee754_exp|exp@)", "libm exp (eval with an artifact: log-softmax and KL, one call per logit)"),
    (r"read_tensor|convert_to_f32|bf16_to_f32|widen", "weights read from the checkpoint and widened to f32"),
    (r"nvfp4|hash::|avx2_update|count_nonfinite|xxh|pack|writer", "pack: quantize, hash, write (not calibration)"),
    (r"\[k\] (clear_page|.*page_fault|get_page_from_freelist|__handle_mm_fault|do_anonymous_page|.*folio_alloc|rmqueue)",
     "kernel: page faults and zeroing fresh pages"),
    (r"\[k\] (copy_folio_from_iter|_copy_to_iter|copy_user|filemap|.*_write|.*_read)", "kernel: file reads and writes"),
    (r"\[k\] ", "kernel: other (scheduling, locks)"),
    (r"libc\.so.*(memcpy|memmove|memset)", "libc memcpy/memset"),
]


def main():
    data = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,sym", "--stdio",
                          "--percent-limit", "0", "-g", "none"], capture_output=True, text=True, check=True).stdout
    by_symbol = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+([\d.]+)%\s+(\S.*?)\s{2,}(\[.\])\s+(.*?)\s*$", line)
        if not m:
            continue
        pct, dso, kind, sym = float(m.group(1)), m.group(2).strip(), m.group(3), m.group(4).strip()
        if dso.startswith("[JIT]"):
            key = "[JIT] oneDNN"
        elif "libgomp" in dso:
            key = "libgomp"
        else:
            key = f"{dso}: {kind} {sym}"
        by_symbol[key] += pct
    by_kind = collections.Counter()
    rows = []
    for key, pct in by_symbol.most_common():
        what = next((w for p, w in KINDS if re.search(p, key)), "other")
        by_kind[what] += pct
        rows.append((pct, key, what))
    print(f"{data}: per symbol (top {top})")
    for pct, key, what in rows[:top]:
        name = key.split("] ", 1)[-1] if "fp4c::" in key else key
        name = re.sub(r"\((?!anon\)).*", "", name.replace("(anonymous namespace)::", "(anon)::"))
        print(f"  {pct:6.2f}%  {name[:70]:70s}  {what}")
    print(f"  {sum(p for p, _, _ in rows[top:]):6.2f}%  (the other symbols)")
    print(f"{data}: per kind of work")
    for what, pct in by_kind.most_common():
        print(f"  {pct:6.2f}%  {what}")


if __name__ == "__main__":
    main()
