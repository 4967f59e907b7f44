#!/usr/bin/env bash
# Checks that every mlswarm binary linked against LibTorch lists libstdc++ before any LibTorch
# library among its DT_NEEDED entries (docs/architecture.md, "Linking against LibTorch").
# PyTorch's own libtorch.so exports copies of libstdc++ functions (std::filesystem::remove_all
# among them, which jumps to address 0 when called from outside); the dynamic linker binds a
# symbol to the first library in that order that defines it, so libstdc++ must come first.
# Usage: scripts/check_link_order.sh BUILD_DIR [BINARY_NAME ...]   (names that must be found)
set -euo pipefail
build=${1:?usage: check_link_order.sh BUILD_DIR [BINARY_NAME ...]}
shift
required=("$@")
checked=0
failed=0
seen=()
while IFS= read -r -d '' file; do
  needed=$(readelf -d "$file" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') || continue
  grep -qE '^lib(torch|c10)' <<<"$needed" || continue
  first_torch=$(grep -nE '^lib(torch|c10)' <<<"$needed" | head -1 | cut -d: -f1)
  stdcxx=$(grep -n '^libstdc++\.so' <<<"$needed" | head -1 | cut -d: -f1)
  checked=$((checked + 1))
  seen+=("$(basename "$file")")
  if [[ -z $stdcxx || $stdcxx -gt $first_torch ]]; then
    echo "FAIL $file: libstdc++ is entry ${stdcxx:-none}, $(sed -n "${first_torch}p" <<<"$needed") entry $first_torch:"
    tr '\n' ' ' <<<"$needed"
    echo
    failed=$((failed + 1))
  fi
done < <(find "$build" -path '*/CMakeFiles' -prune -o -type f -perm -u+x -print0)
for name in "${required[@]}"; do
  printf '%s\n' "${seen[@]}" | grep -qx "$name" || { echo "FAIL $name: not found under $build"; failed=$((failed + 1)); }
done
echo "check_link_order: $checked LibTorch binaries checked, $failed failed"
((failed == 0 && checked > 0))
