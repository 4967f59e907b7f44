#!/usr/bin/env bash
# The GPU check: the product as users run it, on a machine with an NVIDIA GPU whose python3 has
# PyTorch with CUDA and which has none of mlswarm's other dependencies (docs/operations.md,
# "GPU check"). One command, at most LIMIT_S seconds (480):
#   here:  scripts/gpu_deps.sh                 (downloads the .debs into .deps/debs)
#   there: OUT=dir scripts/gpu_check.sh        (carrying .deps)
# Steps, each with its own time limit; a failing step is a loud "gpu_check: FAILED" line and the
# rest still runs (a step whose binary did not build is FAILED too):
#   build     unpack the .debs into .deps/prefix; build the daemons, the CLI, the LibTorch unit
#             tests and the training benchmark against PyTorch's LibTorch (make -k)
#   link      scripts/check_link_order.sh: libstdc++ before LibTorch in every binary
#   units     unit_tests_torch, TrainingTest's jobs on DEVICE (MLSWARM_TEST_DEVICE)
#   train     an ml_trainer (DATA_DIR: the carried Fashion-MNIST) and an ml_controller on loopback;
#             through the controller's /train: the default convnet for CONVNET_EPOCHS (10) and the
#             resnet with crop_flip for RESNET_EPOCHS (15), on all 60,000 images
#   serve     the controller with SERVE_DEVICE=$DEVICE, then cpu: `mlswarm load` on each model at
#             CLIENTS (16 64), LOAD_SECONDS each, with the controller's and the load generator's
#             CPU time, the GPU's utilisation and /metrics after each
#   explore   serving the convnet at 64 clients with the load generator and the controller on
#             separate cores, and with twice as many HTTP threads as cores
#   bench     bench_train_throughput for both models, fast path and fp32 against the resident ceiling
# The summary table goes to the terminal and to $OUT/gpu_check.md; the whole log to
# $OUT/gpu_check.log, each step's raw output beside it.
# Environment: DEPS_DIR (.deps), BUILD_DIR (build-gpu), JOBS (nproc), DEVICE (cuda), LIMIT_S (480),
# TORCH_PREFIX (PyTorch's cmake_prefix_path), STEPS (all of the above), ROUNDS (2), EXAMPLES (60000),
# CONVNET_EPOCHS (10), RESNET_EPOCHS (15), TRAIN_EXAMPLES and TEST_EXAMPLES (all), CLIENTS ("16 64"),
# LOAD_SECONDS (5). A dry run on the CPU with an existing build (docs/operations.md, "GPU check"):
#   DEVICE=cpu BUILD_DIR=build STEPS="link units train serve bench explore" DATA_DIR=/usr/share/datasets \
#   CONVNET_EPOCHS=2 RESNET_EPOCHS=1 TRAIN_EXAMPLES=3000 TEST_EXAMPLES=1000 EXAMPLES=2560 ROUNDS=1 scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
start=$SECONDS
limit=${LIMIT_S:-480}
device=${DEVICE:-cuda}
steps=" ${STEPS:-build link units train serve bench explore} "
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_check.log") 2>&1
deps=$(realpath "${DEPS_DIR:-.deps}")
build_dir=$(realpath -m "${BUILD_DIR:-build-gpu}")
work=$(mktemp -d)
table=$out/gpu_check.md
printf '| step | result | seconds | what was measured |\n| --- | --- | --- | --- |\n' >"$table"
failures=0
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

say() { echo "== $(date -u +%H:%M:%S) +$((SECONDS - start))s $*"; }
left() { echo $((limit - (SECONDS - start))); }
wanted() { [[ $steps == *" $1 "* ]]; }
# row STEP RESULT SECONDS TEXT: one line of the summary; FAILED is also a loud line in the log
row() {
  printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >>"$table"
  if [[ $2 == FAILED* ]]; then
    failures=$((failures + 1))
    echo "gpu_check: FAILED: $1: $4" >&2
  fi
}
# can STEP SECONDS: whether STEP is asked for and SECONDS are left; a skipped step gets its row
can() {
  wanted "$1" || return 1
  if (($(left) < $2)); then
    row "$1" "skipped" 0 "$(left) s left of LIMIT_S=$limit, the step needs about $2"
    return 1
  fi
}
have() { [[ -x $build_dir/$1 ]]; }
py=${PYTHON:-python3}
json_get() { "$py" -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
wait_http() {  # URL SECONDS
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# ---- build ----------------------------------------------------------------------------------
prefix=$deps/prefix
usr=$prefix/usr
arch_lib=$usr/lib/x86_64-linux-gnu
data_dir=${DATA_DIR:-$usr/share/datasets}
export PKG_CONFIG_PATH=$arch_lib/pkgconfig:$usr/share/pkgconfig:$usr/lib/pkgconfig
export LD_LIBRARY_PATH=$arch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if wanted build; then
  t0=$SECONDS
  say "unpacking $(find "$deps/debs" -name '*.deb' | wc -l) packages into $prefix"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  for deb in "$deps"/debs/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
  # The .pc files name /usr (in prefix=, and some in libdir=, -I...); CMake's package files find
  # their prefix from where they lie.
  find "$prefix" -name '*.pc' -exec sed -i -E "s#(=|-I|-L)/usr(/|\$|[[:space:]])#\1$usr\2#g" {} +
  if [[ -z ${TORCH_PREFIX:-} ]]; then
    TORCH_PREFIX=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
    say "$("$py" -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())')"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  pkg_config=()
  if ! command -v pkg-config >/dev/null; then pkg_config=(-DPKG_CONFIG_EXECUTABLE="$usr/bin/pkgconf"); fi
  say "configuring $build_dir"
  targets=(ml_trainer ml_controller mlswarm unit_tests_torch bench_train_throughput)
  if cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DMLSWARM_E2E=OFF \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$usr;$arch_lib/cmake" \
    -DCMAKE_INCLUDE_PATH="$usr/include" -DCMAKE_LIBRARY_PATH="$arch_lib" \
    -DBoost_INCLUDE_DIR="$usr/include" -DMLSWARM_DATA_DIR="$data_dir" "${pkg_config[@]}" >"$out/configure.log" 2>&1; then
    say "building ${targets[*]}"
    cmake --build "$build_dir" -j "${JOBS:-$(nproc)}" --target "${targets[@]}" -- -k >"$out/build.log" 2>&1
    grep -E 'error|Error' "$out/build.log" | head -20
  else
    tail -30 "$out/configure.log"
  fi
  built=()
  missing=()
  for t in trainer/ml_trainer controller/ml_controller cli/mlswarm tests/unit/unit_tests_torch bench/bench_train_throughput; do
    if have "$t"; then built+=("${t##*/}"); else missing+=("${t##*/}"); fi
  done
  torch_version=$(grep -o 'LibTorch [0-9.a-z+]*' "$out/configure.log" | head -1)
  if ((${#missing[@]} == 0)); then
    row build ok $((SECONDS - t0)) "${torch_version:-LibTorch ?}; all ${#built[@]} targets, -j${JOBS:-$(nproc)}"
  else
    row build FAILED $((SECONDS - t0)) "not built: ${missing[*]} (configure.log, build.log)"
  fi
  have trainer/ml_trainer && "$build_dir/trainer/ml_trainer" --version
fi

# ---- link order -----------------------------------------------------------------------------
if can link 5; then
  t0=$SECONDS
  if scripts/check_link_order.sh "$build_dir" >"$out/link.log" 2>&1; then
    row link ok $((SECONDS - t0)) "$(tail -1 "$out/link.log")"
  else
    cat "$out/link.log"
    row link FAILED $((SECONDS - t0)) "$(tail -1 "$out/link.log")"
  fi
fi

# ---- unit tests -----------------------------------------------------------------------------
if can units 60; then
  t0=$SECONDS
  if ! have tests/unit/unit_tests_torch; then
    row units FAILED 0 "unit_tests_torch was not built"
  else
    say "unit_tests_torch, the training tests on $device"
    MLSWARM_TEST_DEVICE=$device timeout 150 "$build_dir/tests/unit/unit_tests_torch" --gtest_brief=1 >"$out/units.log" 2>&1
    rc=$?
    grep -E '^\[  (FAILED|PASSED) ' "$out/units.log" | sort -u
    passed=$(grep -oE '^\[  PASSED  \] [0-9]+' "$out/units.log" | grep -oE '[0-9]+$')
    failed_tests=$(grep -E '^\[  FAILED  \] [A-Za-z]' "$out/units.log" | sed 's/^\[  FAILED  \] //; s/ .*//' | sort -u | tr '\n' ' ')
    if ((rc == 0)); then
      row units ok $((SECONDS - t0)) "${passed:-?} tests passed on $device"
    else
      tail -5 "$out/units.log"
      row units FAILED $((SECONDS - t0)) "exit $rc; passed ${passed:-?}; failed: ${failed_tests:-see units.log}"
    fi
  fi
fi

# ---- the daemons: train -----------------------------------------------------------------------
home=$work/home
mkdir -p "$home"
controller_url=http://127.0.0.1:61695
trainer_pid=""
controller_pid=""
start_trainer() {
  DATA_DIR=$data_dir "$build_dir/trainer/ml_trainer" --host 127.0.0.2 --port 61696 --home-dir "$home" \
    >>"$out/trainer.log" 2>&1 &
  trainer_pid=$!
  pids+=("$trainer_pid")
  wait_http http://127.0.0.2:61696/healthz 30
}
start_controller() {  # SERVE_DEVICE [wrapper and extra options...]
  local serve=$1
  shift
  local wrapper=()
  while (($# > 0)) && [[ $1 != --* ]]; do wrapper+=("$1"); shift; done
  DATA_DIR=$data_dir SERVE_DEVICE=$serve "${wrapper[@]}" "$build_dir/controller/ml_controller" --host 127.0.0.1 \
    --port 61695 --subnet 127.0.0.0/30 --train-port 61696 --home-dir "$home" "$@" >>"$out/controller.log" 2>&1 &
  controller_pid=$!
  pids+=("$controller_pid")
  wait_http "$controller_url/healthz" 30
}
stop_controller() {
  [[ -n $controller_pid ]] || return 0
  kill -TERM "$controller_pid" 2>/dev/null
  wait "$controller_pid" 2>/dev/null
  controller_pid=""
}
# train_job NAME SECONDS BODY: a job through the controller; its row has wall time, accuracy, images/s
train_job() {
  local name=$1 limit_s=$2 body=$3 t0=$SECONDS state="" deadline
  say "training $name: $body"
  if ! curl -sf -X POST "$controller_url/train" -H 'Content-Type: application/json' -d "$body" >"$out/train-$name.json"; then
    row "train $name" FAILED 0 "/train refused: $(cat "$out/train-$name.json")"
    return
  fi
  deadline=$((SECONDS + limit_s))
  while ((SECONDS < deadline)); do
    state=$(curl -sf "$controller_url/jobs/$name" | json_get 'd["state"]' 2>/dev/null)
    [[ $state == succeeded || $state == failed || $state == cancelled ]] && break
    sleep 0.5
  done
  local wall=$((SECONDS - t0))
  curl -sf "$controller_url/jobs/$name" >"$out/job-$name.json"
  curl -sf "$controller_url/models/$name" >"$out/model-$name.json"
  if [[ $state != succeeded ]]; then
    grep -iE 'error|fail|abort|signal' "$out/trainer.log" | tail -5
    row "train $name" FAILED "$wall" "state ${state:-none} after $wall s (limit $limit_s): $(head -c 300 "$out/job-$name.json")"
    return
  fi
  row "train $name" ok "$wall" "$("$py" - "$out/model-$name.json" <<'PY'
import json, statistics, sys
m = json.load(open(sys.argv[1]))
e = m["epochs"]
print("%d epochs in %.1f s of training (%.1f s an epoch after the first), test accuracy %.4f, "
      "%.0f images/s median (%.0f-%.0f)" % (len(e), sum(x["duration_s"] for x in e),
      statistics.median([x["duration_s"] for x in e[1:]] or [e[0]["duration_s"]]), m["accuracy"],
      statistics.median(x["images_per_s"] for x in e), min(x["images_per_s"] for x in e),
      max(x["images_per_s"] for x in e)))
PY
)"
}
if can train 120; then
  if ! have trainer/ml_trainer || ! have controller/ml_controller; then
    row train FAILED 0 "ml_trainer or ml_controller was not built"
  elif ! start_trainer || ! start_controller "$device"; then
    tail -20 "$out/trainer.log" "$out/controller.log"
    row train FAILED 0 "a daemon did not answer /healthz (trainer.log, controller.log)"
  else
    deadline=$((SECONDS + 30))
    until curl -sf "$controller_url/status" | grep -q '127.0.0.2'; do
      ((SECONDS < deadline)) || break
      sleep 0.2
    done
    # A dry run trains on fewer images: TRAIN_EXAMPLES, TEST_EXAMPLES (default all).
    range=${TRAIN_EXAMPLES:+\"example_idxs\":[0,$TRAIN_EXAMPLES],}${TEST_EXAMPLES:+\"test_idxs\":[0,$TEST_EXAMPLES],}
    train_job gpu-convnet 150 "{$range\"model_id\":\"gpu-convnet\",\"job_id\":\"gpu-convnet\",\"model_type\":\"convnet\",\"dataset\":\"fashion-mnist\",\"train_opts\":{\"epochs\":${CONVNET_EPOCHS:-10}}}"
    if can "train" 100; then
      train_job gpu-resnet 200 "{$range\"model_id\":\"gpu-resnet\",\"job_id\":\"gpu-resnet\",\"model_type\":\"resnet\",\"dataset\":\"fashion-mnist\",\"train_opts\":{\"epochs\":${RESNET_EPOCHS:-15},\"augment\":\"crop_flip\"}}"
    fi
    grep -E 'gpu-(convnet|resnet)' "$out/trainer.log" | grep -iE 'start|precision|bf16|fp32' | head -4
  fi
fi

# ---- the daemons: serve -----------------------------------------------------------------------
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
threads() {  # PID: "tid ticks" per thread
  local stat
  for stat in /proc/"$1"/task/*/stat; do awk '{print $1, $14 + $15}' "$stat" 2>/dev/null; done
}
# load_round LABEL MODEL CLIENTS: one `mlswarm load`; its row has requests/s, p50/p99, failures,
# CPU-seconds of the controller and of the load generator per 1,000 requests, GPU utilisation
load_round() {
  local label=$1 model=$2 clients=$3 before after gpu_pid="" t0=$SECONDS tag
  tag=$(tr ' /' '__' <<<"$label-$model-$clients")
  before=$(cpu_ticks "$controller_pid")
  curl -sf "$controller_url/metrics" >"$out/metrics-$tag.before"
  threads "$controller_pid" >"$out/threads-$tag.before"
  if command -v nvidia-smi >/dev/null && [[ $label == *cuda* ]]; then
    nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 250 >"$out/gpu-$tag.txt" 2>/dev/null &
    gpu_pid=$!
  fi
  TIMEFORMAT='%U %S'
  { time "${LOADER[@]}" "$build_dir/cli/mlswarm" --url "$controller_url" load --model "$model" --clients "$clients" \
      --seconds "${LOAD_SECONDS:-5}" --warmup 1 --label "$label" >"$out/load-$tag.json" 2>"$out/load-$tag.err"; } 2>"$out/load-$tag.time"
  after=$(cpu_ticks "$controller_pid")
  [[ -n $gpu_pid ]] && { kill "$gpu_pid" 2>/dev/null; wait "$gpu_pid" 2>/dev/null; }
  threads "$controller_pid" >"$out/threads-$tag.after"
  curl -sf "$controller_url/metrics" >"$out/metrics-$tag.txt"
  local text
  text=$("$py" - "$out/load-$tag.json" "$out/load-$tag.time" "$((after - before))" "$(getconf CLK_TCK)" "$out/gpu-$tag.txt" \
    "$out/metrics-$tag.before" "$out/metrics-$tag.txt" "$out/threads-$tag.before" "$out/threads-$tag.after" <<'PY'
import json, os, sys
def metrics(path):
    values = {}
    for line in open(path) if os.path.exists(path) else []:
        if line.startswith("mlswarm_predict_") or line.startswith('mlswarm_http_request_duration_seconds_sum{route="/predict"') \
                or line.startswith('mlswarm_http_request_duration_seconds_count{route="/predict"'):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values
m0, m1 = metrics(sys.argv[6]), metrics(sys.argv[7])
delta = lambda k: m1.get(k, 0) - m0.get(k, 0)
passes, examples = delta("mlswarm_predict_forward_passes_total"), delta("mlswarm_predict_examples_total")
server = delta('mlswarm_http_request_duration_seconds_sum{route="/predict"}') / max(1, delta('mlswarm_http_request_duration_seconds_count{route="/predict"}'))
def ticks(path):
    return dict(line.split() for line in open(path)) if os.path.exists(path) else {}
t0, t1 = ticks(sys.argv[8]), ticks(sys.argv[9])
busy = sorted((int(v) - int(t0.get(k, 0)) for k, v in t1.items()), reverse=True)
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
if not lines:
    print("FAILED no result line"); sys.exit()
r = json.loads(lines[-1])
user, system = (float(x) for x in open(sys.argv[2]).read().split()[-2:])
n = max(1, r["requests"])
ctl = int(sys.argv[3]) / float(sys.argv[4])
gpu = ""
if os.path.exists(sys.argv[5]):
    u = [float(x) for x in open(sys.argv[5]).read().split() if x.replace(".", "").isdigit()]
    if u: gpu = ", GPU busy %.0f%%" % (sum(u) / len(u))
status = "FAILED " if r["failed"] or not r["requests"] else ""
seconds = float(os.environ.get("LOAD_SECONDS", "5")) + 1
hz = float(sys.argv[4])
top = ", ".join("%.0f" % (100 * b / hz / seconds) for b in busy[:6])
print("%s%.0f requests/s, p50 %.2f ms, p99 %.2f ms, %d failed; mean batch %.1f, %.2f ms in the server; CPU ms per request: "
      "controller %.3f, load generator %.3f%s; busiest controller threads %%: %s of %d" % (
    status, r["requests_per_s"], r["p50_ms"], r["p99_ms"], r["failed"], examples / max(1, passes), 1000 * server,
    1000 * ctl / n, 1000 * (user + system) / n, gpu, top, len(busy)))
PY
)
  if [[ $text == FAILED* ]]; then
    tail -3 "$out/load-$tag.err"
    row "serve $label $model $clients" FAILED $((SECONDS - t0)) "${text#FAILED }"
  else
    row "serve $label $model $clients" ok $((SECONDS - t0)) "$text"
  fi
}
LOADER=()
serve_device() {  # DEVICE [wrapper/options for start_controller]
  local serve=$1
  stop_controller
  if ! start_controller "$@"; then
    row "serve $serve" FAILED 0 "the controller did not start (controller.log)"
    return
  fi
  for model in gpu-convnet gpu-resnet; do
    [[ -f $home/models/$model/meta.json ]] || { row "serve $serve $model" FAILED 0 "no model $model (training failed)"; continue; }
    for clients in ${CLIENTS:-16 64}; do
      can serve $((${LOAD_SECONDS:-5} + 3)) || return
      load_round "$serve" "$model" "$clients"
    done
  done
}
if wanted serve; then
  if ! have controller/ml_controller || ! have cli/mlswarm; then
    row serve FAILED 0 "ml_controller or mlswarm was not built"
  else
    say "serving with SERVE_DEVICE=$device, then cpu"
    serve_device "$device"
    [[ $device != cpu ]] && serve_device cpu
  fi
fi

# ---- explore: where serving's time goes --------------------------------------------------------
# The convnet at 64 clients on DEVICE, one setting changed at a time against the serve step's
# defaults: the load generator and the controller on separate cores; twice as many HTTP threads
# as cores; larger batches; two forward workers.
explore_round() {  # LABEL [wrapper and options for start_controller...]
  local label=$1
  shift
  can explore $((${LOAD_SECONDS:-5} + 8)) || return 1
  stop_controller
  if start_controller "$device" "$@"; then
    load_round "$device $label" gpu-convnet 64
  else
    row "explore $label" FAILED 0 "the controller did not start (controller.log)"
  fi
}
if wanted explore && have controller/ml_controller && [[ -f $home/models/gpu-convnet/meta.json ]]; then
  cores=$(nproc)
  quarter=$((cores >= 8 ? cores / 4 : 1))
  if command -v taskset >/dev/null && ((cores >= 2)); then
    LOADER=(taskset -c "0-$((quarter - 1))")
    explore_round "loader on $quarter cores" taskset -c "$quarter-$((cores - 1))"
    LOADER=()
  fi
  explore_round "http-threads $((2 * cores))" --http-threads $((2 * cores)) &&
    explore_round "max-batch 64" --predict-max-batch 64 &&
    explore_round "max-batch 64, 2 workers" --predict-max-batch 64 --predict-workers 2
fi
stop_controller

# ---- bench_train_throughput ---------------------------------------------------------------------
if wanted bench; then
  for model in convnet resnet; do
    can bench 40 || break
    t0=$SECONDS
    if ! have bench/bench_train_throughput; then
      row "bench $model" FAILED 0 "bench_train_throughput was not built"
      continue
    fi
    say "bench_train_throughput $model: fast path against fp32 NCHW"
    timeout $(($(left) - 5)) "$build_dir/bench/bench_train_throughput" --device "$device" --amp both --model-type "$model" \
      --rounds "${ROUNDS:-2}" --examples "${EXAMPLES:-60000}" --data-dir "$data_dir" >"$out/bench-$model.log" 2>&1
    rc=$?
    cat "$out/bench-$model.log"
    if ((rc == 0)); then
      row "bench $model" ok $((SECONDS - t0)) "$(grep -E '^(trainer|device)|against' "$out/bench-$model.log" |
        sed -E 's/ +/ /g; s/\(real loop, one epoch of [0-9]+ images\)://' | tr '\n' ';')"
    else
      row "bench $model" FAILED $((SECONDS - t0)) "exit $rc (bench-$model.log)"
    fi
  done
fi

say "done in $((SECONDS - start)) s, $failures failed ($root)"
row total "$( ((failures == 0)) && echo ok || echo "$failures failed")" $((SECONDS - start)) "LIMIT_S=$limit, DEVICE=$device, $(nproc) cores"
echo
cat "$table"
((failures == 0))
