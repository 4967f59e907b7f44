#!/usr/bin/env bash
# Predict benchmark: single-image /predict at 16 concurrent clients against mlswarm's
# controller and, in the same run on the same machine, against a Flask + gunicorn + PyTorch
# server with the same architecture. Prints requests/s and p50/p99 latency for both.
#
#   bench/predict.sh            (after scripts/build.sh; installs the baseline's packages)
#   CLIENTS=16 SECONDS_PER_RUN=15 GUNICORN_WORKERS=2 bench/predict.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-16}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
GUNICORN_WORKERS=${GUNICORN_WORKERS:-2}
GUNICORN_THREADS=${GUNICORN_THREADS:-4}
scripts/install_deps.sh python3-torch python3-flask gunicorn
build=${BUILD_DIR:-build}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
wait_http() { local d=$((SECONDS + 60)); until curl -sf -o /dev/null "$1"; do ((SECONDS < d)) || return 1; sleep 0.2; done; }

# A real model to serve: one quick epoch on 2,000 Fashion-MNIST images.
"$build/trainer/ml_trainer" --host 127.0.0.2 --port 48596 --home-dir "$work" >"$work/trainer.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.2:48596/healthz
curl -sf -X POST http://127.0.0.2:48596/train -d '{"model_id":"bench","job_id":"bench","example_idxs":[0,2000],"train_opts":{"epochs":1}}' >/dev/null
until curl -sf http://127.0.0.2:48596/jobs/bench | grep -q '"state":"succeeded"'; do sleep 0.5; done
kill -TERM "${pids[0]}"

"$build/controller/ml_controller" --host 127.0.0.1 --port 48595 --subnet 127.0.0.0/30 --train-port 48596 \
  --home-dir "$work" ${CONTROLLER_ARGS:-} >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:48595/healthz
curl -sf 'http://127.0.0.1:48595/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
  /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["examples"]; print(json.dumps({"model_id":"bench","examples":e}))' \
  >"$work/body.json"

(cd bench && TORCH_THREADS=1 /usr/bin/gunicorn --workers "$GUNICORN_WORKERS" --threads "$GUNICORN_THREADS" \
  --bind 127.0.0.1:48594 --log-level warning flask_predict_server:app) >"$work/gunicorn.log" 2>&1 &
pids+=($!)
until curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data @"$work/body.json" http://127.0.0.1:48594/predict; do sleep 0.3; done

echo "single-image /predict, $CLIENTS concurrent clients, ${SECONDS_PER_RUN}s each, $(nproc) cores"
"$build/cli/mlswarm" --url http://127.0.0.1:48595 load --body-file "$work/body.json" --clients "$CLIENTS" \
  --seconds "$SECONDS_PER_RUN" --label mlswarm || true
"$build/cli/mlswarm" --url http://127.0.0.1:48594 load --body-file "$work/body.json" --clients "$CLIENTS" \
  --seconds "$SECONDS_PER_RUN" --label "flask+gunicorn(${GUNICORN_WORKERS}x${GUNICORN_THREADS})+pytorch" || true
curl -sf http://127.0.0.1:48595/status | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["serving"]
print("mlswarm batching: %d requests in %d forward passes (%.1f per pass)" % (
    s["requests"], s["forward_passes"], s["requests"] / max(1, s["forward_passes"])))'
