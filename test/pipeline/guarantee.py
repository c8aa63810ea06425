#!/usr/bin/env python3
"""The pass manager's guarantee: every built-in recipe x scheme x format (and a pipeline per pass and
rule the recipes leave out) gives the same artifact bytes and manifest, timings aside, as recorded
in testdata/guarantee/artifact_hashes.json before the pass manager became a library.

    guarantee.py --fp4c build/fp4c --synth build/fp4c-synth --expected FILE [--record]

Calibrated runs go through oneDNN's matrix multiplies, whose float results depend on the CPU's
instruction set; the record says which (cpu_class). On another class only the runs that need no
forward (uncalibrated W4A16/MXFP4A16 and every scale rule without statistics) are compared, and the
script says so.
"""
import argparse, hashlib, json, os, shutil, subprocess, sys, tempfile

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")
STORIES = os.path.normpath(os.path.join(SHARED, "models", "stories260K"))
VOLATILE = {"commandLine", "modelDir", "buildCost", "createdUtc"}

RECIPES = ["plain", "smoothquant", "best", "auto", "auto-gptaq", "signround", "auto-5pct", "sensitive"]
PASSES = [  # every pass and rule the built-in recipes leave out
    "stats{second_moments=true},gptq{act_order=true},blockscale,pack",
    "stats{second_moments=true},gptq{scales=localhessian},blockscale,pack",
    "stats,outliers{k=6,top=4},blockscale{rule=mse},pack",
    "stats{second_moments=true},blockscale{rule=localhessian},pack",
    "stats,blockscale{rule=4over6},pack",
    "stats,sensitivity{metric=kl,budget=5%},blockscale,pack",
    "stats,smoothquant{alpha=0.6,extra=true},stats,blockscale{rule=weighted},pack",
]
UNCALIBRATED = ["blockscale{rule=max},pack", "blockscale{rule=mse},pack", "blockscale{rule=4over6},pack"]


def cpu_class():
    """The CPU vendor and every SIMD feature oneDNN dispatches on: calibrated runs are compared only
    between machines of one class (an exact match of this string)."""
    flags, vendor = set(), "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
            elif line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
    except OSError:
        pass
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    return vendor + ":" + "+".join(simd)


def cases(models):
    out = []
    for mname, (model, calib) in models.items():
        for fmt in ("compressed-tensors", "modelopt"):
            for scheme in ("w4a16", "w4a4"):
                for r in RECIPES:
                    out.append((f"{mname}/{scheme}/{fmt}/recipe={r}", model,
                                ["--scheme", scheme, "--format", fmt, "--recipe", r, "--calib", calib], True))
                for p in PASSES:
                    out.append((f"{mname}/{scheme}/{fmt}/passes={p}", model,
                                ["--scheme", scheme, "--format", fmt, "--passes", p, "--calib", calib], True))
            out.append((f"{mname}/w4a16/{fmt}/uncalibrated", model, ["--scheme", "w4a16", "--format", fmt], False))
            for p in UNCALIBRATED:
                out.append((f"{mname}/w4a16/{fmt}/passes={p}", model,
                            ["--scheme", "w4a16", "--format", fmt, "--passes", p], False))
        for scheme in ("mxfp4a16", "mxfp4"):
            for r in ("plain", "smoothquant"):
                out.append((f"{mname}/{scheme}/compressed-tensors/recipe={r}", model,
                            ["--scheme", scheme, "--recipe", r, "--calib", calib], True))
        out.append((f"{mname}/mxfp4a16/compressed-tensors/uncalibrated", model, ["--scheme", "mxfp4a16"], False))
    return out


def digest_dir(d):
    files = {}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if name == "fp4c-manifest.json":
            m = json.load(open(p))
            for k in VOLATILE:
                m.pop(k, None)
            m.get("options", {}).get("calibration", {}).pop("path", None)
            data = json.dumps(m, sort_keys=True).encode()
        else:
            data = open(p, "rb").read()
        files[name] = hashlib.sha256(data).hexdigest()[:32]
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp4c", required=True)
    ap.add_argument("--synth", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fp4c-guarantee-")
    try:
        synth = os.path.join(tmp, "synth")
        subprocess.run([a.synth, "--preset", "tiny", "--out", synth, "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        calib = os.path.join(tmp, "calib.txt")
        corpus = os.path.join(os.path.dirname(__file__), "..", "..", "testdata", "tokenizers", "corpus.txt")
        shutil.copy(corpus, calib)
        models = {"synth-tiny": (synth, calib)}
        if os.path.exists(os.path.join(STORIES, "model.safetensors")):
            models["stories260K"] = (STORIES, os.path.join(STORIES, "calib.jsonl"))
        else:
            print(f"note: no {STORIES}; stories260K cases skipped")
        cls = cpu_class()
        expected = {} if a.record else json.load(open(a.expected))
        same_class = a.record or expected.get("cpu_class") == cls
        if not same_class:
            print(f"note: recorded on {expected.get('cpu_class')}, this CPU is {cls}: comparing only the runs "
                  "without a forward (oneDNN's float results depend on the instruction set)")
        got, failures, compared = {}, [], 0
        for name, model, args, calibrated in cases(models):
            if not a.record and (calibrated and not same_class):
                continue
            if not a.record and name not in expected["cases"]:
                if name.split("/")[0] in models:
                    failures.append(f"{name}: not in the record")
                continue
            out = os.path.join(tmp, "out")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [a.fp4c, "quantize", "--model", model, "--out", out, "--quiet", "--threads", "2",
                   "--packing", "chunks", "--seq-len", "64", "--calib-samples", "24", "--seed", "1"] + args
            if not calibrated:
                cmd = [x for x in cmd if x not in ("--packing", "chunks", "--seq-len", "64", "--calib-samples", "24",
                                                   "--seed", "1")]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            result = {"exit": r.returncode}
            if r.returncode == 0:
                result["files"] = digest_dir(out)
            else:
                result["error"] = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
            got[name] = result
            compared += 1
            if not a.record and expected["cases"][name] != result:
                failures.append(f"{name}: {json.dumps(result)}\n    recorded {json.dumps(expected['cases'][name])}")
        if a.record:
            with open(a.expected, "w") as f:
                json.dump({"cpu_class": cls, "cases": got}, f, indent=1, sort_keys=True)
                f.write("\n")
            print(f"recorded {len(got)} cases on {cls} into {a.expected}")
            return 0
        for f in failures:
            print("DIFFERS " + f)
        print(f"{compared} cases compared, {len(failures)} differ")
        return 1 if failures else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
