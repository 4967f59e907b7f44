#!/usr/bin/env bash
# Configures and builds mlswarm (Release) into BUILD_DIR (default: build): everything, or only
# the targets named in TARGETS (e.g. TARGETS="ml_trainer ml_controller mlswarm": what
# scripts/run_local.sh runs, without the tests and benchmarks).
# Extra arguments go to cmake's configure step, e.g. -DCMAKE_PREFIX_PATH=... for a CUDA LibTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"
targets=()
for t in ${TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "${JOBS:-2}" "${targets[@]}"
