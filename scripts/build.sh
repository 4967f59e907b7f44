#!/usr/bin/env bash
# Configures and builds mlswarm (Release) into BUILD_DIR (default: build).
# Extra arguments go to cmake's configure step, e.g. -DCMAKE_PREFIX_PATH=... for a CUDA LibTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j "${JOBS:-2}"
