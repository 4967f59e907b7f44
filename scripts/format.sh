#!/usr/bin/env bash
# The C++ of the repository in the house style (.clang-format): `scripts/format.sh` rewrites
# the files in place; `scripts/format.sh --check` changes nothing and fails, naming the files,
# when one is not formatted (the ctest test `clang_format`).
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cpp' '*.h' | sort)
if [[ ${1:-} == --check ]]; then
  unformatted=()
  for f in "${files[@]}"; do
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then unformatted+=("$f"); fi
  done
  if ((${#unformatted[@]} > 0)); then
    printf 'not in the house style (run scripts/format.sh): %s\n' "${unformatted[@]}" >&2
    clang-format --dry-run "${unformatted[0]}" 2>&1 | head -20 >&2
    exit 1
  fi
  echo "clang-format: ${#files[@]} files in the house style"
else
  clang-format -i "${files[@]}"
fi
