#!/usr/bin/env bash
# The README's test command: installs what is missing, builds from scratch into a fresh
# folder, and runs every test (unit, fuzz replays, integration on loopback) with ctest.
# MLSWARM_E2E=ON adds the Docker Swarm end-to-end test (as CI does); it needs root, and it
# never touches a swarm it did not make, so a plain run never leaves or joins one.
set -euo pipefail
cd "$(dirname "$0")/.."
# promtool checks /metrics; shellcheck the scripts; clang-format the C++; chromium drives the dashboard; tmux the CLI
scripts/install_deps.sh prometheus shellcheck clang-format universal-ctags chromium chromium-driver python3-selenium tmux
export BUILD_DIR=${BUILD_DIR:-build-test}
rm -rf "$BUILD_DIR"
scripts/build.sh -DMLSWARM_E2E="${MLSWARM_E2E:-OFF}"
cd "$BUILD_DIR"
ctest --output-on-failure -j "${TEST_JOBS:-2}" --timeout 600
