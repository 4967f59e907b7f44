# shellcheck shell=bash disable=SC2154
# (build and work are set by the script that sources this file.)
# What the benchmarks share: source it after `cd` to the repository root, with `build` (the
# build folder) and `work` (a fresh temporary folder, removed on exit) set.
#   pids+=($!)                       processes stopped (TERM, then waited for) on exit
#   wait_http URL [SECONDS]          until URL answers 2xx; exits with a message at the deadline
#   train_bench_model HOST PORT      a real model "bench" (1 epoch, 2,000 Fashion-MNIST images) in
#                                    $work, trained by a trainer started and stopped here
#   start_two_trainers TRAIN_PORT CONTROLLER_PORT [CONTROLLER FLAGS...]
#                                    trainers on 127.0.0.2 and .3 (one LibTorch thread each) and a
#                                    controller on 127.0.0.1 that has found both; sets `controller`
# Ports: every benchmark uses ports above the kernel's ephemeral range (32768-60999), so no
# outgoing connection of anything else holds them.
pids=()
bench_cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap bench_cleanup EXIT
bench_die() { echo "$(basename "$0"): $*" >&2; exit 1; }
wait_http() {
  local deadline=$((SECONDS + ${2:-60}))
  until curl -sf -o /dev/null "$1"; do
    ((SECONDS < deadline)) || bench_die "no answer from $1 within ${2:-60} s (logs in $work)"
    sleep 0.2
  done
}
train_bench_model() {  # HOST PORT
  "$build/trainer/ml_trainer" --host "$1" --port "$2" --home-dir "$work" >"$work/trainer.log" 2>&1 &
  local trainer=$!
  pids+=("$trainer")
  wait_http "http://$1:$2/healthz"
  curl -sf -X POST "http://$1:$2/train" \
    -d '{"model_id":"bench","job_id":"bench","example_idxs":[0,2000],"train_opts":{"epochs":1}}' >/dev/null ||
    bench_die "the trainer refused the bench job"
  local deadline=$((SECONDS + 300))
  until curl -sf "http://$1:$2/jobs/bench" | grep -q '"state":"succeeded"'; do
    ((SECONDS < deadline)) || { tail "$work/trainer.log"; bench_die "the bench model did not train within 300 s"; }
    sleep 0.5
  done
  kill -TERM "$trainer"
  wait "$trainer" 2>/dev/null || true
}
start_two_trainers() {  # TRAIN_PORT CONTROLLER_PORT [CONTROLLER FLAGS...]
  local train_port=$1 controller_port=$2 i
  shift 2
  for i in 2 3; do
    "$build/trainer/ml_trainer" --host "127.0.0.$i" --port "$train_port" --home-dir "$work" --threads 1 \
      >"$work/trainer-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 2 3; do wait_http "http://127.0.0.$i:$train_port/healthz"; done
  "$build/controller/ml_controller" --host 127.0.0.1 --port "$controller_port" --subnet 127.0.0.0/29 \
    --train-port "$train_port" --home-dir "$work" --scan-interval-ms 500 "$@" >"$work/controller.log" 2>&1 &
  pids+=($!)
  controller="http://127.0.0.1:$controller_port"
  wait_http "$controller/healthz"
  local deadline=$((SECONDS + 60))
  until [[ $(curl -s "$controller/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["trainers"]))') == 2 ]]; do
    ((SECONDS < deadline)) || bench_die "the controller did not find both trainers"
    sleep 0.2
  done
}
