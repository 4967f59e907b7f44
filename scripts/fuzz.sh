#!/usr/bin/env bash
# Fuzzes every parser that sees network or shared-mount bytes with libFuzzer, AddressSanitizer
# and UndefinedBehaviorSanitizer (clang from Debian), SECONDS per target (default 180), one
# target after the other, and prints executions per target. A crash leaves its input under
# build-fuzz/crashes/<target>/ and fails the run: copy it to tests/fuzz/regressions/<target>/
# so that ctest replays it from then on, and fix the code.
#   scripts/fuzz.sh            # 3 minutes per target, ~25 minutes in all
#   scripts/fuzz.sh 30 image   # 30 s, one target
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(job_spec predict_body image dataset_files meta_json trainer_reply http_request checkpoint)

scripts/install_deps.sh clang libclang-rt-14-dev
build="build-fuzz"
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined -g -O1"
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMLSWARM_FUZZ=libfuzzer \
  -DMLSWARM_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS="$flags" >/dev/null
mapfile -t fuzz_targets < <(printf 'fuzz_%s\n' "${targets[@]}")
cmake --build "$build" -j2 --target "${fuzz_targets[@]}"

export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1
summary=()
failed=0
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  crashes="$build/crashes/$t"
  # Crashes of earlier runs are gone from here (they belong in tests/fuzz/regressions/).
  rm -rf "$crashes"
  mkdir -p "$corpus" "$crashes"
  [[ $t == checkpoint ]] && export MLSWARM_FUZZ_SEED_DIR="$corpus"
  log="$build/fuzz_$t.log"
  echo "fuzz: $t for $seconds s"
  rc=0
  "$build/tests/fuzz/fuzz_$t" "$corpus" "tests/fuzz/corpus/$t" -max_total_time="$seconds" -timeout=20 \
    -rss_limit_mb=6144 -print_final_stats=1 -artifact_prefix="$crashes/" >"$log" 2>&1 || rc=$?
  unset MLSWARM_FUZZ_SEED_DIR
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  found=$(find "$crashes" -type f | wc -l)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o '[0-9]* second' | grep -o '[0-9]*' || true)
  summary+=("$(printf '%-14s %5s s %12s execs %8s /s  cov %6s  crashes %s' "$t" "${took:-$seconds}" "${execs:-?}" \
    "$(( ${execs:-0} / (${took:-$seconds} > 0 ? ${took:-$seconds} : 1) ))" "${cov:-?}" "$found")")
  if ((rc != 0 || found > 0)); then
    failed=1
    echo "fuzz: $t failed (exit $rc); the end of $log:"
    tail -40 "$log"
  fi
done
printf '%s\n' "${summary[@]}"
exit $failed
