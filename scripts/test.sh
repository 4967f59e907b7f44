#!/usr/bin/env bash
# The README's test command: installs what is missing, builds from scratch into a fresh
# folder, and runs every test (unit, integration on loopback) with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
export BUILD_DIR=${BUILD_DIR:-build-test}
rm -rf "$BUILD_DIR"
scripts/build.sh -DMLSWARM_E2E=${MLSWARM_E2E:-ON}
cd "$BUILD_DIR"
ctest --output-on-failure -j "${TEST_JOBS:-2}" --timeout 600
