#!/usr/bin/env bash
# The pass manager's guarantee (test/pipeline/guarantee.py): artifacts and manifests as recorded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exec python3 "$here/guarantee.py" --fp4c "${FP4C_BIN:-build/fp4c}" --synth "${FP4C_SYNTH_BIN:-build/fp4c-synth}" \
  --expected "$here/../../testdata/guarantee/artifact_hashes.json"
