#!/usr/bin/env python3
"""Loads fp4c's compressed-tensors artifacts with Hugging Face transformers + compressed-tensors (PyPI),
decompresses them, checks every dequantized Linear weight against the NVFP4 formula applied to the packed
bytes (NVFP4.md §3, what fp4c's own dequantization computes) or, for MXFP4 artifacts (mxfp4-pack-quantized),
the MXFP4 one (fp4 * 2^(E8M0 byte - 127), blocks of 32), and compares the perplexity transformers computes on
an evaluation set with `fp4c eval`'s. Schemes: w4a16, w4a4 (NVFP4), mxfp4a16, mxfp4 (MXFP4).

    loader_conformance.py --fp4c BUILD/fp4c --model DIR --eval FILE.jsonl --work DIR

Not part of `make test` (it needs PyTorch); `make conformance` sets up a virtual environment and runs it.
Exit status 1 when a weight differs or the perplexities disagree by more than --ppl-rtol."""
import argparse, json, math, os, subprocess, sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from transformers.utils.quantization_config import CompressedTensorsConfig

FP4 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], dtype=np.float32)


def fp8_e4m3(b):
    b = b.astype(np.int32)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp = (b >> 3) & 0xF
    man = b & 0x7
    val = np.where(exp == 0, man / 8.0 * 2.0 ** -6, (1 + man / 8.0) * 2.0 ** (exp - 7.0))
    val = np.where((exp == 0xF) & (man == 0x7), np.nan, val)
    return (sign * val).astype(np.float32)


def dequantize(packed, scales, gscale):
    lo, hi = packed & 0xF, packed >> 4
    codes = np.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)
    vals = FP4[codes]
    # Per block of 16: value * (scale / G), the division rounded to float32 as in quantization.
    step = (fp8_e4m3(scales) / np.float32(gscale)).astype(np.float32)
    return (vals.reshape(vals.shape[0], -1, 16) * step[:, :, None]).reshape(vals.shape).astype(np.float32)


def dequantize_mxfp4(packed, scales):
    lo, hi = packed & 0xF, packed >> 4
    codes = np.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)
    vals = FP4[codes]
    # Per block of 32: value * 2^(byte - 127), exact in float32 (no fp4c scale is 0xFF, E8M0's NaN).
    step = np.ldexp(np.float32(1), scales.astype(np.int32) - 127).astype(np.float32)
    return (vals.reshape(vals.shape[0], -1, 32) * step[:, :, None]).reshape(vals.shape).astype(np.float32)


def artifact_tensors(art):
    t = {}
    for f in sorted(os.listdir(art)):
        if f.endswith(".safetensors"):
            for k, v in load_file(os.path.join(art, f)).items():
                if v.dtype == torch.float8_e4m3fn:
                    v = v.view(torch.uint8)
                t[k] = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
    return t


def quantize_inputs(model, tensors, mx):
    """W4A4: fake-quantizes every quantized Linear's input with compressed-tensors' own dynamic activation
    quantization (its NVFP4 / MXFP4 preset's input_activations; NVFP4 with the artifact's input global scale),
    as a serving engine does before the FP4 GEMM. transformers' decompressed model does not do this itself."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp
    args = preset_name_to_scheme("MXFP4" if mx else "NVFP4", ["Linear"]).input_activations
    hooks = 0
    for name, module in model.named_modules():
        if name + ".weight_packed" not in tensors:
            continue
        gs = None if mx else torch.tensor(tensors[name + ".input_global_scale"], dtype=torch.float32)

        def hook(m, inputs, gs=gs):
            x = inputs[0]
            scale, zp = compute_dynamic_scales_and_zp(value=x, args=args, module=m, global_scale=gs)
            return (fake_quantize(x=x, scale=scale, zero_point=zp, args=args, global_scale=gs),)

        module.register_forward_pre_hook(hook)
        hooks += 1
    return hooks


def fp4_round(y):
    # NVFP4.md §1: thresholds, ties to the even code; the sign kept (-0 for a negative that rounds to 0).
    a = np.abs(y)
    m = (a > 0.25).astype(int) + (a >= 0.75) + (a > 1.25) + (a >= 1.75) + (a > 2.5) + (a >= 3.5) + (a > 5)
    return np.copysign(FP4[m], y)


def fp4c_activation_rule(x, mx, gx=None):
    """fp4c's W4A4 activation fake-quantization (runtime/activation_quant.h), written again in numpy."""
    block = 32 if mx else 16
    b = x.reshape(x.shape[0], -1, block)
    a = np.abs(b).max(-1).astype(np.float32)
    if mx:  # compressed-tensors' rule: amax rounded to one mantissa bit, floor(log2) - 2, clamped
        e = ((a.view(np.uint32) + (1 << 21)) >> 23).astype(np.int64)
        e = np.where(e == 0, -127, np.clip(e - 127 - 2, -127, 127))
        d = np.ldexp(np.float32(1), e).astype(np.float32)
    else:   # s = fp8(min(Gx * (a / 6), 448)), 0 -> 0.125; d = s / Gx in float32
        want = np.minimum(np.float32(gx) * (a / np.float32(6)), np.float32(448)).astype(np.float32)
        s = torch.from_numpy(want).to(torch.float8_e4m3fn).float().numpy()
        d = (np.where(s == 0, np.float32(0.125), s) / np.float32(gx)).astype(np.float32)
    return (fp4_round((b / d[..., None]).astype(np.float32)) * d[..., None]).reshape(x.shape).astype(np.float32)


def activation_rule_check(mx, trials=20):
    """compressed-tensors' dynamic activation fake-quantization against fp4c's rule on random heavy-tailed
    data (fresh seed): the number of elements that differ (0 expected)."""
    from compressed_tensors.quantization import preset_name_to_scheme
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils.helpers import compute_dynamic_scales_and_zp
    args = preset_name_to_scheme("MXFP4" if mx else "NVFP4", ["Linear"]).input_activations
    rng = np.random.default_rng()
    m = torch.nn.Linear(4, 4)
    total = differ = 0
    for _ in range(trials):
        x = (rng.standard_t(3, size=(64, 256)) * 2.0 ** rng.uniform(-12, 12)).astype(np.float32)
        gx = None if mx else np.float32(448 * 6 / (np.abs(x).max() * rng.uniform(0.5, 1.5)))
        g = None if mx else torch.tensor([gx], dtype=torch.float32)
        xt = torch.from_numpy(x)
        scale, zp = compute_dynamic_scales_and_zp(value=xt, args=args, module=m, global_scale=g)
        ct = fake_quantize(x=xt, scale=scale, zero_point=zp, args=args, global_scale=g).numpy()
        total += x.size
        differ += int((ct != fp4c_activation_rule(x, mx, gx)).sum())
    return differ, total


def perplexity(model, eval_path):
    nll, n = 0.0, 0
    with open(eval_path) as f:
        for line in f:
            ids = json.loads(line)["input_ids"]
            x = torch.tensor([ids])
            with torch.no_grad():
                logits = model(x).logits[0, :-1].double()
            lp = torch.log_softmax(logits, dim=-1)
            nll -= lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()
            n += len(ids) - 1
    return math.exp(nll / n), n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp4c", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--calib")
    ap.add_argument("--work", required=True)
    ap.add_argument("--ppl-rtol", type=float, default=2e-3)
    ap.add_argument("--w4a4-ppl-rtol", type=float, default=1e-2)
    ap.add_argument("--schemes", default="w4a16,w4a4,mxfp4a16,mxfp4")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    ok = True
    report = []
    for scheme in a.schemes.split(","):
        mx = scheme.startswith("mxfp4")
        w4a4 = scheme in ("w4a4", "mxfp4")
        art = os.path.join(a.work, scheme)
        cmd = [a.fp4c, "quantize", "--quiet", "--force", "--model", a.model, "--out", art, "--scheme", scheme]
        if scheme == "w4a4":
            cmd += ["--calib", a.calib or a.eval]
        subprocess.run(cmd, check=True)
        fp4c_eval = json.loads(subprocess.run([a.fp4c, "eval", "--json", "--no-manifest", "--model", a.model,
                                               "--artifact", art, "--data", a.eval], check=True,
                                              capture_output=True, text=True).stdout)
        model = AutoModelForCausalLM.from_pretrained(
            art, torch_dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False))
        params = dict(model.named_parameters())
        t = artifact_tensors(art)
        checked, differ, bf16_rounded = 0, 0, 0
        exact = {}
        for name in t:
            if not name.endswith(".weight_packed"):
                continue
            base = name[: -len(".weight_packed")]
            if mx:
                want = dequantize_mxfp4(t[name], t[base + ".weight_scale"])
            else:
                want = dequantize(t[name], t[base + ".weight_scale"], t[base + ".weight_global_scale"][0])
            got = params[base + ".weight"].detach().numpy()
            exact[base + ".weight"] = want
            checked += 1
            if got.shape == want.shape and not np.array_equal(got, want):
                # compressed-tensors dequantizes into the checkpoint's dtype (BF16): compare at that precision.
                want_bf16 = torch.from_numpy(want).to(torch.bfloat16).float().numpy()
                if np.array_equal(got, want_bf16):
                    bf16_rounded += 1
                    continue
            if got.shape != want.shape or not np.array_equal(got, want):
                differ += 1
                d = np.abs(got - want).max() if got.shape == want.shape else float("nan")
                print(f"{scheme}: {base}: transformers' weight differs from the packed bytes' value (max {d})")
        hooked = quantize_inputs(model, t, mx) if w4a4 else 0
        ppl, n = perplexity(model, a.eval)
        rel = abs(ppl - fp4c_eval["perplexity"]) / fp4c_eval["perplexity"]
        fmt = "MXFP4" if mx else "NVFP4"
        line = (f"{scheme}: {checked} {fmt} Linears decompressed by compressed-tensors: {checked - differ - bf16_rounded} "
                f"equal the packed bytes' {fmt} values exactly, {bf16_rounded} equal them rounded to BF16, {differ} "
                f"differ; perplexity transformers {ppl:.6f} vs fp4c eval "
                f"{fp4c_eval['perplexity']:.6f} ({n} predictions, relative difference {rel:.2e})")
        if bf16_rounded:
            # The same model with the packed bytes' exact float32 values in place of compressed-tensors' BF16
            # rounding: what is left is the runtimes' own difference.
            with torch.no_grad():
                for k, v in exact.items():
                    params[k].copy_(torch.from_numpy(v))
            ppl_exact, _ = perplexity(model, a.eval)
            line += (f"; with the exact float32 weights transformers gives {ppl_exact:.6f} (relative difference "
                     f"{abs(ppl_exact - fp4c_eval['perplexity']) / fp4c_eval['perplexity']:.2e})")
        if w4a4:
            d, n_act = activation_rule_check(mx)
            line += (f" [W4A4: the inputs of {hooked} Linears fake-quantized by compressed-tensors' own dynamic "
                     f"{fmt} activation quantization, which differs from fp4c's rule on {d} of {n_act} random values]")
            ok &= d == 0
        print(line, flush=True)
        report.append(line)
        ok &= differ == 0 and checked > 0 and rel <= (a.w4a4_ppl_rtol if w4a4 else a.ppl_rtol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
