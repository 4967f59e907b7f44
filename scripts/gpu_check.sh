#!/usr/bin/env bash
# The GPU check, run on a machine with an NVIDIA GPU whose python3 has PyTorch with CUDA and
# which has none of mlswarm's other dependencies (docs/operations.md, "GPU check"):
#   here:  scripts/gpu_deps.sh                 (downloads the .debs into .deps/debs)
#   there: scripts/gpu_check.sh                (carrying .deps)
# It unpacks the .debs into .deps/prefix, builds the LibTorch unit tests and the training
# benchmark against PyTorch's LibTorch into build-gpu/, then runs the unit tests (TrainingTest's
# jobs on the GPU: MLSWARM_TEST_DEVICE=cuda) and bench_train_throughput with bf16 autocast and
# channels-last on and off, round by round, against the resident-batch ceiling.
# Output goes to the terminal and, when OUT is set, to $OUT/gpu_check.log.
# Environment: DEPS_DIR (.deps), BUILD_DIR (build-gpu), JOBS (nproc), ROUNDS (3), EXAMPLES
# (60000), MODELS ("convnet resnet"), DEVICE (cuda), SKIP_TESTS (0), TORCH_PREFIX (PyTorch's cmake_prefix_path).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
deps=$(realpath "${DEPS_DIR:-.deps}")
build_dir=${BUILD_DIR:-build-gpu}
log=/dev/null
if [[ -n ${OUT:-} ]]; then log=$OUT/gpu_check.log; fi
exec > >(tee -a "$log") 2>&1

step() { echo "== $(date -u +%H:%M:%S) $*"; }

step "unpacking $(find "$deps/debs" -name '*.deb' | wc -l) packages into $deps/prefix"
prefix=$deps/prefix
rm -rf "$prefix"
mkdir -p "$prefix"
for deb in "$deps"/debs/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
usr=$prefix/usr
arch_lib=$usr/lib/x86_64-linux-gnu
# The .pc files name /usr (in prefix=, and some in libdir=, -I...); CMake's package files find
# their prefix from where they lie.
find "$prefix" -name '*.pc' -exec sed -i -E "s#(=|-I|-L)/usr(/|\$|[[:space:]])#\1$usr\2#g" {} +
export PKG_CONFIG_PATH=$arch_lib/pkgconfig:$usr/share/pkgconfig:$usr/lib/pkgconfig
export LD_LIBRARY_PATH=$arch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

py=${PYTHON:-python3}
if [[ -z ${TORCH_PREFIX:-} ]]; then
  TORCH_PREFIX=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  step "$("$py" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())')"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "configuring $build_dir"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMLSWARM_E2E=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$usr;$arch_lib/cmake" \
  -DCMAKE_INCLUDE_PATH="$usr/include" -DCMAKE_LIBRARY_PATH="$arch_lib" \
  -DBoost_INCLUDE_DIR="$usr/include" -DMLSWARM_DATA_DIR="$usr/share/datasets"
step "building"
cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target unit_tests_torch bench_train_throughput ml_trainer

if [[ ${SKIP_TESTS:-0} != 1 ]]; then
  step "unit tests with LibTorch, the training tests on ${DEVICE:-cuda}"
  MLSWARM_TEST_DEVICE=${DEVICE:-cuda} "$build_dir/tests/unit/unit_tests_torch" --gtest_brief=1 ||
    echo "gpu_check: unit_tests_torch FAILED"
fi
"$build_dir/trainer/ml_trainer" --version || true
for model in ${MODELS:-convnet resnet}; do
  step "bench_train_throughput $model: bf16 autocast + channels-last against fp32 NCHW"
  "$build_dir/bench/bench_train_throughput" --device "${DEVICE:-cuda}" --amp both --model-type "$model" \
    --rounds "${ROUNDS:-3}" --examples "${EXAMPLES:-60000}" --data-dir "$usr/share/datasets" ||
    echo "gpu_check: bench_train_throughput $model FAILED"
done
step "done ($root)"
