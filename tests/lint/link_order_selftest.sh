#!/usr/bin/env bash
# scripts/check_link_order.sh must fail on the two ways a binary can bind its std:: calls to a
# LibTorch library, and pass when linked as CMake links mlswarm (libstdc++ right before LibTorch).
# A stand-in "libtorch_fake.so" exports std::filesystem::remove_all as PyTorch's libtorch.so does.
set -euo pipefail
check=$(realpath "$(dirname "$0")/../../scripts/check_link_order.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
cat >fake.cpp <<'CPP'
extern "C" unsigned long fake_remove_all(const void*) __asm__("_ZNSt10filesystem10remove_allERKNS_7__cxx114pathE");
extern "C" unsigned long fake_remove_all(const void*) { return 0; }
CPP
printf '#include <filesystem>\n#include <iostream>\nint main() { std::cout << std::filesystem::remove_all("%s/none") << "\\n"; }\n' "$work" >main.cpp
c++ -shared -fPIC fake.cpp -o libtorch_fake.so
c++ -std=c++17 -c main.cpp -o main.o
torch=(-L. "-Wl,--no-as-needed" -ltorch_fake "-Wl,--as-needed" "-Wl,-rpath,$work")
link() { mkdir -p "$1"; shift; c++ main.o "$@" -o "${dir:?}/main"; }
dir=shared_bad; link "$dir" "${torch[@]}"                                   # the fake before libstdc++
dir=static_bad; link "$dir" -static-libstdc++ "${torch[@]}"                 # remove_all left to the fake
dir=shared_good; link "$dir" -lstdc++ "${torch[@]}"                          # as mlswarm links
dir=static_good; link "$dir" -static-libstdc++ -Wl,-Bstatic -lstdc++ -Wl,-Bdynamic "${torch[@]}"
failures=0
for case in shared_bad static_bad; do
  if "$check" "$case" >"$case.log" 2>&1; then echo "FAIL: the check passed $case:"; cat "$case.log"; failures=$((failures + 1)); fi
done
for case in shared_good static_good; do
  "$check" "$case" >"$case.log" 2>&1 || { echo "FAIL: the check failed $case:"; cat "$case.log"; failures=$((failures + 1)); }
done
echo "link_order_selftest: 4 cases, $failures failed"
((failures == 0))
