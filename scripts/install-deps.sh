#!/usr/bin/env bash
# Installs llmq's build and test dependencies (Debian 12 packages). Idempotent:
# packages already present are left alone.
set -euo pipefail
pkgs=(build-essential pkg-config
      libcurl4-openssl-dev libjansson-dev libcriterion-dev
      libopenblas-openmp-dev liblapacke-dev
      libpcre2-dev libutf8proc-dev libssl-dev
      python3
      openmpi-bin libopenmpi-dev                          # make MPI=1: calibration over mpirun ranks (tests/mpi)
      python3-numpy python3-torch python3-sentencepiece    # llama.cpp's convert_hf_to_gguf.py (conformance)
      clang libclang-rt-14-dev libomp-dev                 # libFuzzer drivers (make fuzz)
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) # NEON kernel tests (make test-neon)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
