#!/usr/bin/env python3
"""The table of every transformers conformance case (testdata/conformance): fp4c's f32 NLL against the one
transformers recorded (relative difference), and the W4A4 recovery of the `plain` and `auto` recipes, each
calibrated on the case's calib.jsonl and evaluated on its eval.jsonl (the ids transformers' NLL is over).

  scripts/conformance/recovery_table.py [--fp4c build/fp4c] [--recipes plain,auto] [--cases a,b]

Prints a Markdown table; nothing is written outside a temporary directory.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(" ".join(cmd) + "\n" + out.stderr)
    return json.loads(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fp4c", default=os.path.join(ROOT, "build", "fp4c"))
    ap.add_argument("--recipes", default="plain,auto")
    ap.add_argument("--cases", default="")
    ap.add_argument("--threads", default="2")
    a = ap.parse_args()
    base = os.path.join(ROOT, "testdata", "conformance")
    cases = sorted(c for c in os.listdir(base) if os.path.isfile(os.path.join(base, c, "expected.json")))
    if a.cases:
        cases = [c for c in cases if c in a.cases.split(",")]
    recipes = a.recipes.split(",")
    print("| case | architecture | config form | transformers NLL | fp4c NLL | relative difference | " +
          " | ".join(f"W4A4 `{r}` recovery" for r in recipes) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(recipes))
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            d = os.path.join(base, case)
            e = json.load(open(os.path.join(d, "expected.json")))
            data = os.path.join(d, e["eval_file"])
            ref = run_json([a.fp4c, "eval", "--model", d, "--data", data, "--json", "--threads", a.threads])
            nll = ref.get("reference_nll", ref.get("nll"))
            want = e["nll"]["total"]
            cells = []
            for r in recipes:
                out = os.path.join(tmp, f"{case}-{r}")
                q = subprocess.run([a.fp4c, "quantize", "--quiet", "--model", d, "--out", out, "--scheme", "w4a4",
                                    "--recipe", r, "--calib", os.path.join(d, e["calib_file"]), "--threads", a.threads],
                                   capture_output=True, text=True)
                if q.returncode != 0:
                    cells.append("refused: " + q.stderr.strip().splitlines()[-1][:80])
                    continue
                ev = run_json([a.fp4c, "eval", "--model", d, "--artifact", out, "--data", data, "--json",
                               "--threads", a.threads])
                cells.append(f"{ev['recovery']:.4f}")
            print(f"| {case} | {e['architecture']} | {e.get('config_form', '')} | {want:.6f} | {nll:.6f} | "
                  f"{abs(nll - want) / abs(want):.1e} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
