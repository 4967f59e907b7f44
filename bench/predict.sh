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
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61596

"$build/controller/ml_controller" --host 127.0.0.1 --port 61595 --subnet 127.0.0.0/30 --train-port 61596 \
  --home-dir "$work" ${CONTROLLER_ARGS:-} >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:61595/healthz
curl -sf 'http://127.0.0.1:61595/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
  /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["examples"]; print(json.dumps({"model_id":"bench","examples":e}))' \
  >"$work/body.json"

(cd bench && TORCH_THREADS=1 /usr/bin/gunicorn --workers "$GUNICORN_WORKERS" --threads "$GUNICORN_THREADS" \
  --bind 127.0.0.1:61594 --log-level warning flask_predict_server:app) >"$work/gunicorn.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 60))
until curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data @"$work/body.json" http://127.0.0.1:61594/predict; do
  ((SECONDS < deadline)) || { tail "$work/gunicorn.log"; bench_die "the Flask baseline did not answer on 127.0.0.1:61594 within 60 s"; }
  sleep 0.3
done

echo "single-image /predict, $CLIENTS concurrent clients, ${SECONDS_PER_RUN}s each, $(nproc) cores"
"$build/cli/mlswarm" --url http://127.0.0.1:61595 load --body-file "$work/body.json" --clients "$CLIENTS" \
  --seconds "$SECONDS_PER_RUN" --label mlswarm || true
"$build/cli/mlswarm" --url http://127.0.0.1:61594 load --body-file "$work/body.json" --clients "$CLIENTS" \
  --seconds "$SECONDS_PER_RUN" --label "flask+gunicorn(${GUNICORN_WORKERS}x${GUNICORN_THREADS})+pytorch" || true
curl -sf http://127.0.0.1:61595/status | /usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)["serving"]
print("mlswarm batching: %d requests in %d forward passes (%.1f per pass)" % (
    s["requests"], s["forward_passes"], s["requests"] / max(1, s["forward_passes"])))'
