#!/usr/bin/env bash
# Adaptive serving, three measurements on one controller build (issue: serving that tunes itself):
#  1. step load: 4 clients for 30 s, and 64 more from second 10 to 20; each second's p99 of both
#     against PREDICT_P99_TARGET_MS, and how long after each step the 4 clients' p99 was back
#     under the target;
#  2. fairness: a convnet's p99 at 4 clients alone, then while a resnet is under load from 16
#     clients (each model has its own queue and the workers take them in turn);
#  3. memory: RSS of the controller after one prediction each from 30 models in turn, with
#     SERVE_MEMORY_MB set small and with no bound;
#  4. publish: a new version of the convnet published under 4 clients: the p99 of the first 100
#     requests it answers against the steady p99 before (bench/publish_latency.py).
# BASE_BUILD_DIR (optional): the same fairness run with another build's controller beside it (a
# build from before the per-model queues), in the same script.
#
#   bench/adaptive_serving.sh          (after scripts/build.sh)
#   BASE_BUILD_DIR=build-base SECONDS_PER_RUN=10 bench/adaptive_serving.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
SERVE_MEMORY_MB=${SERVE_MEMORY_MB:-8}
SECTIONS=${SECTIONS:-step fair memory publish}  # which of the four to run
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61696  # "bench": a convnet
# A resnet (for the fairness run): its weights do not matter for latency, so one short epoch.
if [[ $SECTIONS == *fair* ]]; then
"$build/trainer/ml_trainer" --host 127.0.0.2 --port 61696 --home-dir "$work" >"$work/trainer2.log" 2>&1 &
trainer=$!
pids+=("$trainer")
wait_http http://127.0.0.2:61696/healthz
curl -sf -X POST http://127.0.0.2:61696/train -d '{"model_id":"heavy","job_id":"heavy","model_type":"resnet",
  "example_idxs":[0,500],"test_idxs":[0,100],"train_opts":{"epochs":1}}' >/dev/null || bench_die "the resnet job was refused"
deadline=$((SECONDS + 600))
until curl -sf http://127.0.0.2:61696/jobs/heavy | grep -q '"state":"succeeded"'; do
  ((SECONDS < deadline)) || bench_die "the resnet did not train within 600 s"
  sleep 0.5
done
kill -TERM "$trainer"
wait "$trainer" 2>/dev/null || true
fi

port=61695
controller_pid=""
start_controller() {  # BUILD [FLAGS...]: a controller on 127.0.0.1:$port serving $work
  local b=$1
  shift
  "$b/controller/ml_controller" --host 127.0.0.1 --port "$port" --subnet 127.0.0.0/30 --train-port 61696 \
    --home-dir "$work" "$@" >"$work/controller-$port.log" 2>&1 &
  controller_pid=$!
  pids+=("$controller_pid")
  wait_http "http://127.0.0.1:$port/healthz"
}
stop_controller() {
  kill -TERM "$controller_pid"
  wait "$controller_pid" 2>/dev/null || true
  port=$((port + 1))
}
body() {  # MODEL: one test example for it
  curl -sf 'http://127.0.0.1:'"$port"'/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
    /usr/bin/python3 -c 'import json,sys; print(json.dumps({"model_id": sys.argv[1], "examples": json.load(sys.stdin)["examples"]}))' "$1"
}
load() {  # MODEL CLIENTS SECONDS LABEL [ARGS...] (warm-up: $warmup, 1 s unless set)
  local model=$1 clients=$2 seconds=$3 label=$4
  shift 4
  body "$model" >"$work/body-$model.json"
  "$build/cli/mlswarm" --url "http://127.0.0.1:$port" load --body-file "$work/body-$model.json" \
    --clients "$clients" --seconds "$seconds" --warmup "${warmup:-1}" --label "$label" "$@"
}

step_load() {
echo "== 1. step load: 4 clients for 30 s, 64 more from second 10 to 20 (p99 per second, ms)"
start_controller "$build"
target=$(curl -sf "http://127.0.0.1:$port/status" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["serving"]["p99_target_ms"])')
load bench 4 30 steady --per-second >"$work/steady.json" &
steady=$!
sleep 11  # pacing, not synchronisation: the step comes 10 s into the steady load (1 s warm-up)
warmup=0 load bench 64 10 step --per-second >"$work/step.json"
wait "$steady"
curl -sf "http://127.0.0.1:$port/status" >"$work/status.json"
stop_controller
/usr/bin/python3 - "$work/steady.json" "$work/step.json" "$target" "$work/status.json" <<'PY'
import json, sys
steady, step, target = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3])
s = {r["second"]: r for r in steady["per_second"]}
t = {r["second"] + 10: r for r in step["per_second"]}
print("second  4 clients p99  (n)     64 clients p99  (n)    target %.1f" % target)
for sec in sorted(s):
    a, b = s[sec], t.get(sec)
    print("%6d  %13.2f %5d   %s" % (sec, a["p99_ms"], a["requests"],
          "%14.2f %5d" % (b["p99_ms"], b["requests"]) if b else ""))
def back_under(after):
    for sec in sorted(k for k in s if k >= after):
        if s[sec]["p99_ms"] <= target:
            return sec - after
    return None
for at in (10, 20):
    print("after the step at second %d: the 4 clients' p99 under the target %s" % (
        at, "within %d s" % back_under(at) if back_under(at) is not None else "never"))
for m in json.load(open(sys.argv[4]))["serving"]["models"]:
    print("  model %s: batch cap %d, wait %d us, last window p99 %s ms" % (m["model_id"], m["batch_cap"], m["wait_us"], m["p99_ms"]))
PY
}
[[ $SECTIONS != *step* ]] || step_load

fairness() {  # BUILD LABEL
  start_controller "$1"
  load bench 4 "$SECONDS_PER_RUN" "$2 convnet alone" | tee -a "$work/fair.jsonl"
  load heavy 16 $((SECONDS_PER_RUN + 4)) "$2 resnet" >"$work/heavy.json" &
  local heavy=$!
  sleep 2  # pacing: the resnet's load is running before the convnet's is measured
  load bench 4 "$SECONDS_PER_RUN" "$2 convnet beside the resnet" | tee -a "$work/fair.jsonl"
  wait "$heavy"
  tee -a "$work/fair.jsonl" <"$work/heavy.json"
  stop_controller
}
fair() {
echo "== 2. fairness: a convnet at 4 clients, alone and beside a resnet at 16"
fairness "$build" this
if [[ -n ${BASE_BUILD_DIR:-} ]]; then fairness "$BASE_BUILD_DIR" base; fi
/usr/bin/python3 - "$work/fair.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {r["label"]: r for r in rows}
for build in ("this", "base"):
    alone, beside = by.get(build + " convnet alone"), by.get(build + " convnet beside the resnet")
    if alone and beside:
        print("%-4s build: convnet p99 %.2f ms alone, %.2f ms beside the resnet (%.2fx); resnet %.0f req/s" % (
            build, alone["p99_ms"], beside["p99_ms"], beside["p99_ms"] / max(alone["p99_ms"], 1e-9),
            by[build + " resnet"]["requests_per_s"]))
PY
}
[[ $SECTIONS != *fair* ]] || fair

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$controller_pid/status"; }
memory() {  # SERVE_MEMORY_MB
  start_controller "$build" --serve-memory-mb "$1"
  body bench >"$work/one.json"
  curl -sf -X POST -H 'Content-Type: application/json' --data @"$work/one.json" "http://127.0.0.1:$port/predict" >/dev/null
  local base peak=0 now i
  base=$(rss_kb)
  for i in $(seq -w 1 30); do
    sed "s/\"bench\"/\"m$i\"/" "$work/one.json" >"$work/m.json"
    curl -sf -X POST -H 'Content-Type: application/json' --data @"$work/m.json" "http://127.0.0.1:$port/predict" >/dev/null
    now=$(rss_kb)
    ((now > peak)) && peak=$now
  done
  curl -sf "http://127.0.0.1:$port/status" | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["serving"]
mb, base, peak, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print("SERVE_MEMORY_MB %-4s RSS after one model %.1f MB; over 30 models peak %.1f MB (+%.1f), at the end %.1f MB (+%.1f); "
      "%d versions loaded (%.1f MB of weights), %d unloaded" % (mb, base / 1024, peak / 1024, (peak - base) / 1024,
      now / 1024, (now - base) / 1024, s["loaded_versions"], s["loaded_bytes"] / 1e6, s["model_unloads"]))' \
    "$1" "$base" "$peak" "$(rss_kb)"
  stop_controller
}
if [[ $SECTIONS == *memory* ]]; then
  echo "== 3. memory: one prediction each from 30 models in turn"
  for i in $(seq -w 1 30); do
    mkdir -p "$work/models/m$i"
    cp "$work/models/bench/model.pt" "$work/models/m$i/"
    /usr/bin/python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); m["model_id"]=sys.argv[2]; json.dump(m, open(sys.argv[3], "w"))' \
      "$work/models/bench/meta.json" "m$i" "$work/models/m$i/meta.json"
  done
  memory "$SERVE_MEMORY_MB"
  memory 0
fi

if [[ $SECTIONS == *publish* ]]; then
  echo "== 4. a new version published under 4 clients: the first 100 requests it answers"
  start_controller "$build"
  body bench >"$work/body-bench.json"
  /usr/bin/python3 bench/publish_latency.py --url "http://127.0.0.1:$port" --body "$work/body-bench.json" \
    --model-dir "$work/models/bench" --clients 4
  stop_controller
fi
