#!/usr/bin/env bash
# The end-to-end bench scripts in their smoke mode (SMOKE=1: the tiny preset, one run): they read the
# manifest and --json output the tools write today, so a renamed stage or field fails here, not in the
# next person's benchmark run.
set -euo pipefail
cd "${FP4C_SOURCE_DIR:-.}"
export BUILD=${FP4C_BINARY_DIR:-build} SMOKE=1
for b in bench/calibrate_e2e.sh bench/quantize_e2e.sh bench/recipes_e2e.sh bench/profile.sh bench/moe_calibrate.sh bench/ab_e2e.sh; do
  echo "== $b"
  bash "$b"
done
