#!/usr/bin/env bash
# No C++ function of the repository (tests, fuzzers and bench/ included) is longer than 60
# lines, counted from its signature's first line to its closing brace. Functions are found by
# Universal Ctags' C++ parser (Debian `universal-ctags`): free functions, members defined inside
# a class, lambdas and gtest bodies (TEST/TEST_F) alike. third_party/ is not ours.
# Usage: scripts/check_function_length.sh [MAX_LINES] [FILE ...]  (default 60, every tracked file)
set -euo pipefail
cd "$(dirname "$0")/.."
max=${1:-60}
shift || true
if (($# > 0)); then
  files=("$@")
else
  mapfile -t files < <(git ls-files '*.cpp' '*.h' | grep -v '^third_party/' | sort)
fi
ctags=$(command -v ctags-universal || command -v ctags || true)
if [[ -z $ctags ]] || ! "$ctags" --version 2>/dev/null | grep -q 'Universal Ctags'; then
  echo "check_function_length: Universal Ctags is missing (apt-get install universal-ctags)" >&2
  exit 2
fi
long=$("$ctags" --languages=C++ --language-force=C++ --kinds-C++=f --fields=+ne -x \
  --_xformat='%{end} %n %F %N' "${files[@]}" 2>/dev/null |
  awk -v max="$max" '$1 != "" && $1 - $2 + 1 > max { printf "%s:%d %s: %d lines\n", $3, $2, $4, $1 - $2 + 1 }')
if [[ -n $long ]]; then
  echo "functions over $max lines (split them):" >&2
  echo "$long" >&2
  exit 1
fi
echo "function length: every function of ${#files[@]} files within $max lines"
