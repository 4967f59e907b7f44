#!/usr/bin/env bash
# Every shell script of the repository through `shellcheck -S warning` (a ctest test).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t scripts < <(find . -path ./build -prune -o -path './build-*' -prune -o -path ./.git -prune -o -path ./.deps -prune -o \
  \( -name '*.sh' -o -path ./.ci/run \) -type f -print | sort)
shellcheck -S warning "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts, no warnings"
