#!/usr/bin/env bash
# The function-length check can fail: a 61-line function, a member defined inside a class and a
# gtest body are each reported, and a 60-line one is not.
set -euo pipefail
check="$(dirname "$0")/../../scripts/check_function_length.sh"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
body() { for ((i = 0; i < $1; ++i)); do echo "  x();"; done; }
{ echo "void sixty() {"; body 58; echo "}"; } >"$dir/ok.cpp"
{ echo "void long_free() {"; body 59; echo "}"; } >"$dir/free.cpp"
{ echo "struct S {"; echo "  void long_member() {"; body 59; echo "  }"; echo "};"; } >"$dir/member.cpp"
{ echo "TEST(Suite, LongTest) {"; body 59; echo "}"; } >"$dir/gtest.cpp"
"$check" 60 "$dir/ok.cpp" >/dev/null || { echo "FAIL: a 60-line function was refused"; exit 1; }
for f in free member gtest; do
  if out=$("$check" 60 "$dir/$f.cpp" 2>&1); then
    echo "FAIL: the 61-line function in $f.cpp passed"
    exit 1
  fi
  grep -q "61 lines" <<<"$out" || { echo "FAIL: $f.cpp: $out"; exit 1; }
done
echo "function length check: refuses a long free function, member and gtest body; passes 60 lines"
