#!/usr/bin/env python3
"""Build the peer tools' NVFP4 artifacts of SmolLM2-135M (fp4c issue 17).

Runs llm-compressor and auto-round on the BF16 checkpoint with the calibration
token ids of ../shared/models/smollm2/calib.jsonl and saves each result as a
compressed-tensors directory (save_compressed=True) under OUT/<run>, together with
OUT/<run>.build.json (build wall seconds, threads, load average, versions).
With --fp4c, each run is then scored with `fp4c eval` exactly as the peer table in
../shared/models/smollm2/README.md (eval.jsonl, --samples 16 --seq-len 256, f32) into
OUT/<run>.eval.json; --eval-only scores runs already built; --table prints the Markdown
table of every run in OUT that has both files.

Runs (--runs, comma separated; default all, cheapest first):
  llmc-rtn-w4a16   llm-compressor QuantizationModifier NVFP4A16
  llmc-gptq-w4a16  llm-compressor GPTQModifier NVFP4A16, actorder static
  llmc-rtn-w4a4    llm-compressor QuantizationModifier NVFP4
  llmc-sq-w4a4     llm-compressor SmoothQuantModifier(0.5) + QuantizationModifier NVFP4
  llmc-gptq-w4a4   llm-compressor GPTQModifier NVFP4 (its default actorder, static)
  ar-iters0        auto-round scheme NVFP4, iters 0 (its optimized RTN)
  ar-iters50       auto-round scheme NVFP4, iters 50
All llm-compressor runs: targets Linear, ignore lm_head, the 64 calibration records
each cut to at most 256 tokens, one record per sample (batch 1).
auto-round drops samples shorter than seqlen, so its data is the 64 records (each cut
to 256) concatenated and cut into 256-token chunks: 25 chunks; nsamples 25, seqlen 256,
export format "llm_compressor" (compressed-tensors nvfp4-pack-quantized).

Run in the peers venv (/work/venv/peers, see README.md):
  python scripts/peers/smollm2_peers.py --model /tmp/smollm2-bf16 \
      --calib ../shared/models/smollm2/calib.jsonl --out /tmp/peers-out --runs llmc-rtn-w4a16
"""
import argparse
import json
import os
import shutil
import sys
import time

LLMC_RUNS = ["llmc-rtn-w4a16", "llmc-gptq-w4a16", "llmc-rtn-w4a4", "llmc-sq-w4a4", "llmc-gptq-w4a4"]
AR_RUNS = {"ar-iters0": 0, "ar-iters50": 50}
ALL_RUNS = LLMC_RUNS + list(AR_RUNS)

MAX_TOKENS = 256  # per calibration record, as the peer table in shared/models/smollm2/README.md
AR_SEQLEN = 256
AR_NSAMPLES = 25


def read_calib(path):
    """The calibration records' token ids, each cut to MAX_TOKENS."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ids = json.loads(line)["input_ids"]
            except (ValueError, KeyError) as e:
                raise SystemExit(f"{path}:{lineno}: not a JSON record with input_ids ({e})")
            if not ids or not all(isinstance(t, int) for t in ids):
                raise SystemExit(f"{path}:{lineno}: input_ids must be a non-empty list of ints")
            records.append(ids[:MAX_TOKENS])
    if not records:
        raise SystemExit(f"{path}: no records")
    return records


def ar_chunks(records):
    """auto-round's data: all records concatenated, cut into AR_SEQLEN-token chunks."""
    stream = [t for r in records for t in r]
    n = len(stream) // AR_SEQLEN
    return [stream[i * AR_SEQLEN:(i + 1) * AR_SEQLEN] for i in range(n)]


def versions():
    import importlib.metadata as md
    out = {"python": sys.version.split()[0]}
    for p in ["torch", "transformers", "llmcompressor", "compressed-tensors", "auto-round", "accelerate"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def load_model(path, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok


def llmc_recipe(run):
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.smoothquant import SmoothQuantModifier
    common = dict(targets="Linear", ignore=["lm_head"])
    if run == "llmc-rtn-w4a16":
        return QuantizationModifier(scheme="NVFP4A16", **common)
    if run == "llmc-gptq-w4a16":
        return GPTQModifier(scheme="NVFP4A16", actorder="static", **common)
    if run == "llmc-rtn-w4a4":
        return QuantizationModifier(scheme="NVFP4", **common)
    if run == "llmc-sq-w4a4":
        return [SmoothQuantModifier(smoothing_strength=0.5), QuantizationModifier(scheme="NVFP4", **common)]
    if run == "llmc-gptq-w4a4":
        return GPTQModifier(scheme="NVFP4", **common)
    raise ValueError(run)


def build_llmc(run, args, records, out_dir):
    from datasets import Dataset
    from llmcompressor import oneshot
    model, tok = load_model(args.model, args.dtype)
    ds = Dataset.from_dict({
        "input_ids": records,
        "attention_mask": [[1] * len(r) for r in records],
    })
    oneshot(
        model=model,
        tokenizer=tok,
        dataset=ds,
        recipe=llmc_recipe(run),
        max_seq_length=MAX_TOKENS,
        num_calibration_samples=len(records),
        batch_size=args.llmc_batch_size,
    )
    model.save_pretrained(out_dir, save_compressed=True)
    tok.save_pretrained(out_dir)


def build_ar(run, args, records, out_dir):
    import torch
    from auto_round import AutoRound
    chunks = ar_chunks(records)
    if len(chunks) < AR_NSAMPLES:
        raise SystemExit(f"{args.calib}: only {len(chunks)} chunks of {AR_SEQLEN} tokens, need {AR_NSAMPLES}")
    data = [torch.tensor([c], dtype=torch.long) for c in chunks[:AR_NSAMPLES]]
    ar = AutoRound(
        args.model,
        scheme="NVFP4",
        dataset=data,
        iters=AR_RUNS[run],
        nsamples=AR_NSAMPLES,
        seqlen=AR_SEQLEN,
        device_map="cpu",
    )
    ar.quantize_and_save(out_dir, format="llm_compressor")
    # auto-round 0.15.1 writes into OUT/<model name>-<scheme> (here smollm2-bf16-nvfp-w4g16): lift it up.
    inner = artifact_dir(out_dir)
    if inner != out_dir:
        for name in os.listdir(inner):
            os.replace(os.path.join(inner, name), os.path.join(out_dir, name))
        os.rmdir(inner)


def artifact_dir(out_dir):
    """out_dir, or the one subdirectory holding config.json where auto-round put the artifact."""
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    subs = [d for d in sorted(os.listdir(out_dir)) if os.path.isfile(os.path.join(out_dir, d, "config.json"))]
    if len(subs) != 1:
        raise SystemExit(f"{out_dir}: no config.json, and {len(subs)} subdirectories hold one")
    return os.path.join(out_dir, subs[0])


LABELS = {
    "llmc-rtn-w4a16": ("llm-compressor QuantizationModifier NVFP4A16", "W4A16"),
    "llmc-gptq-w4a16": ("llm-compressor GPTQModifier NVFP4A16 (actorder static)", "W4A16"),
    "llmc-rtn-w4a4": ("llm-compressor QuantizationModifier NVFP4", "W4A4"),
    "llmc-sq-w4a4": ("llm-compressor SmoothQuant 0.5 + QuantizationModifier NVFP4", "W4A4"),
    "llmc-gptq-w4a4": ("llm-compressor GPTQModifier NVFP4 (actorder static)", "W4A4"),
    "ar-iters0": ("auto-round NVFP4, iters 0 (its optimized RTN)", "W4A4"),
    "ar-iters50": ("auto-round NVFP4, iters 50, 25 chunks of 256 tokens", "W4A4"),
}


def evaluate(run, args):
    import subprocess
    out_dir = os.path.join(args.out, run)
    cmd = [args.fp4c, "eval", "--model", args.eval_ref or args.model, "--artifact", artifact_dir(out_dir), "--data", args.eval_data,
           "--samples", "16", "--seq-len", "256", "--json", "--threads", str(args.eval_threads), "--no-manifest"]
    print("[peers] " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        # fp4c refusing a peer's artifact is a finding: keep its exact message.
        with open(out_dir + f".eval{args.eval_tag}.err", "w") as f:
            f.write(res.stderr)
        print(f"[peers] {run}: fp4c eval exit {res.returncode}: {res.stderr.strip()}", flush=True)
        return False
    figures = json.loads(res.stdout)
    figures["command"] = cmd
    with open(out_dir + f".eval{args.eval_tag}.json", "w") as f:
        json.dump(figures, f, indent=1)
    print(f"[peers] {run}: perplexity {figures['perplexity']:.4f} recovery {figures['recovery']:.4f} "
          f"KL mean {figures['kl_mean']:.4f} p99 {figures['kl_p99']:.4f} top-1 {figures['top1_agreement']:.4f}",
          flush=True)
    return True


def table(out, tag=""):
    print("| tool, recipe | scheme | perplexity | recovery | KL mean | KL p99 | top-1 | build wall s | build CPU s | threads | load (1 min) before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for run in ALL_RUNS:
        b, e = os.path.join(out, run + ".build.json"), os.path.join(out, run + f".eval{tag}.json")
        if not (os.path.isfile(b) and os.path.isfile(e)):
            continue
        b, e = json.load(open(b)), json.load(open(e))
        label, scheme = LABELS[run]
        print(f"| {label} | {scheme} | {e['perplexity']:.4f} | {e['recovery']:.4f} | {e['kl_mean']:.4f} | "
              f"{e['kl_p99']:.4f} | {e['top1_agreement']:.4f} | {b['build_wall_s']:.0f} | {b['build_cpu_s']:.0f} | "
              f"{b['threads']} | {b['load_before'][0]:.1f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="BF16 Hugging Face checkpoint directory")
    ap.add_argument("--calib", required=True, help="calib.jsonl (input_ids records)")
    ap.add_argument("--out", required=True, help="output directory; each run writes OUT/<run>")
    ap.add_argument("--runs", default=",".join(ALL_RUNS), help="comma separated, from: " + ", ".join(ALL_RUNS))
    ap.add_argument("--threads", default="auto",
                    help="torch threads, or 'auto': 2 when the 1-minute load average is < 1.5, else 1")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="dtype llm-compressor runs load the model in (auto-round loads it itself)")
    ap.add_argument("--llmc-batch-size", type=int, default=1,
                    help="llm-compressor's batch_size; above 1 its default truncating collator cuts each batch "
                         "to its shortest record (batch 8 is one guess at how the peer table was made)")
    ap.add_argument("--seed", type=int, default=0,
                    help="torch.manual_seed before each run: llm-compressor draws its calibration order from "
                         "torch's generator (RandomSampler), and GPTQ's result depends on that order")
    ap.add_argument("--fp4c", help="fp4c binary: score each run with `fp4c eval` after building it")
    ap.add_argument("--eval-data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    "..", "..", "..", "shared", "models", "smollm2", "eval.jsonl"), help="eval.jsonl")
    ap.add_argument("--eval-threads", type=int, default=2)
    ap.add_argument("--eval-ref", help="reference model for fp4c eval (default --model); e.g. the GGUF, "
                    "whose F32 dequantization is the reference of fp4c's README table")
    ap.add_argument("--eval-tag", default="", help="suffix of the figures' file: OUT/<run>.eval<TAG>.json")
    ap.add_argument("--eval-only", action="store_true", help="score runs already built (needs --fp4c)")
    ap.add_argument("--table", action="store_true", help="print the Markdown table of OUT and exit")
    args = ap.parse_args()
    if args.table:
        table(args.out, args.eval_tag)
        return

    runs = [r for r in args.runs.split(",") if r]
    for r in runs:
        if r not in ALL_RUNS:
            raise SystemExit(f"--runs: unknown run '{r}' (known: {', '.join(ALL_RUNS)})")
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        raise SystemExit(f"--model {args.model}: no config.json")
    if args.eval_only:
        if not args.fp4c:
            raise SystemExit("--eval-only needs --fp4c")
        ok = all([evaluate(run, args) for run in runs])
        sys.exit(0 if ok else 1)
    records = read_calib(args.calib)
    os.makedirs(args.out, exist_ok=True)

    import torch
    for run in runs:
        load_before = os.getloadavg()
        threads = (2 if load_before[0] < 1.5 else 1) if args.threads == "auto" else int(args.threads)
        torch.set_num_threads(threads)
        torch.manual_seed(args.seed)
        out_dir = os.path.join(args.out, run)
        tmp_dir = out_dir + ".partial"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        print(f"[peers] {run}: threads {threads}, load {load_before}", flush=True)
        t0 = time.time()
        c0 = time.process_time()
        if run in AR_RUNS:
            build_ar(run, args, records, tmp_dir)
        else:
            build_llmc(run, args, records, tmp_dir)
        wall = time.time() - t0
        cpu = time.process_time() - c0
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(tmp_dir, out_dir)
        info = {
            "run": run,
            "build_wall_s": round(wall, 1),
            "build_cpu_s": round(cpu, 1),
            "threads": threads,
            "seed": args.seed,
            "llmc_batch_size": args.llmc_batch_size if run in LLMC_RUNS else None,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "calib_records": len(records),
            "dtype": args.dtype if run in LLMC_RUNS else "auto-round's",
            "versions": versions(),
        }
        with open(out_dir + ".build.json", "w") as f:
            json.dump(info, f, indent=1)
        print(f"[peers] {run}: {wall:.1f} s wall, {cpu:.1f} s CPU -> {out_dir}", flush=True)
        if args.fp4c:
            evaluate(run, args)


if __name__ == "__main__":
    main()
