#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test fp4c. Idempotent; needs root for apt.
set -euo pipefail
pkgs=(cmake make g++ pkg-config python3 python3-venv
      libprotobuf-dev protobuf-compiler zlib1g-dev libxxhash-dev libcli11-dev nlohmann-json3-dev
      libgtest-dev libgmock-dev libbenchmark-dev libomp-dev libdnnl-dev
      libpcre2-dev time bc
      libopenmpi-dev openmpi-bin   # optional: data-parallel runs under mpirun (runtime/comm.cpp)
      clang libclang-rt-14-dev llvm)   # the sanitizer/fuzzing build: clang, its ASan/UBSan/libFuzzer runtimes, llvm-symbolizer
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
