#!/usr/bin/env bash
# Checks that no mlswarm binary linked against LibTorch can bind its calls into the C++ standard
# library to LibTorch's copies (docs/architecture.md, "Linking against LibTorch"). PyTorch's
# libtorch.so and libtorch_cpu.so export their own std::filesystem (154 functions in 2.11), and
# the copy of std::filesystem::remove_all there jumps to address 0 when called from outside.
# - libstdc++ shared (Debian): it must come before every LibTorch library among the binary's
#   DT_NEEDED entries, since the dynamic linker binds a symbol to the first library defining it.
# - libstdc++ static (a toolchain with only libstdc++.a, as on PyTorch's GPU machine): no std::
#   symbol may be left for the dynamic linker; each must resolve inside the binary.
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
  stdcxx=$(grep -n '^libstdc++\.so' <<<"$needed" | head -1 | cut -d: -f1 || true)
  checked=$((checked + 1))
  seen+=("$(basename "$file")")
  if [[ -n $stdcxx ]]; then
    ((stdcxx < first_torch)) && continue
    echo "FAIL $file: libstdc++ is DT_NEEDED entry $stdcxx, $(sed -n "${first_torch}p" <<<"$needed") entry $first_torch:"
    tr '\n' ' ' <<<"$needed"
    echo
    failed=$((failed + 1))
  else
    # Undefined std:: functions and objects (mangled _ZSt, _ZNSt, _ZNKSt), not the weak template
    # instantiations every translation unit may define.
    open=$(nm -D --undefined-only "$file" | awk '$1 == "U" && $2 ~ /^_Z(N|NK)?St/ { print $2 }')
    [[ -z $open ]] && continue
    echo "FAIL $file: libstdc++ is linked statically, yet $(wc -l <<<"$open") std:: symbols are left to the dynamic linker (LibTorch may define them), e.g.:"
    head -5 <<<"$open"
    failed=$((failed + 1))
  fi
done < <(find "$build" -path '*/CMakeFiles' -prune -o -type f -perm -u+x -print0)
for name in "${required[@]}"; do
  printf '%s\n' "${seen[@]}" | grep -qx "$name" || { echo "FAIL $name: not found under $build"; failed=$((failed + 1)); }
done
echo "check_link_order: $checked LibTorch binaries checked, $failed failed"
((failed == 0 && checked > 0))
