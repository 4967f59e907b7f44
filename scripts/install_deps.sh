#!/usr/bin/env bash
# Installs the Debian packages mlswarm builds, tests and runs with, where missing.
# Usage: scripts/install_deps.sh [extra-package ...]
# libopenblas0-openmp: Debian's LibTorch does its matrix products through libblas.so.3, which
# is the slow reference BLAS unless an optimised one is installed (3x slower convnet training,
# 45% fewer /predict requests/s here; docs/benchmarks.md).
set -euo pipefail

packages=(
  cmake make g++ pkg-config curl ca-certificates python3 openssl libssl-dev
  libtorch-dev libopenblas0-openmp libcpp-httplib-dev libboost-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
  libcli11-dev libstb-dev libturbojpeg0-dev zlib1g-dev libgloo-dev libgtest-dev dataset-fashion-mnist
  "$@"
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install_deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
