#!/usr/bin/env bash
# Serving scale-out: single-image /predict from CLIENTS concurrent clients against one controller
# replica, then against two replicas behind one name, in the same run on the same machine.
# The two replicas share HOME_DIR (one leads, one follows; both serve /predict) and listen on the
# same port at two loopback addresses, as Swarm tasks do on the overlay; the name resolves to
# both (a private /etc/hosts, bind-mounted for the load generator alone, stands in for Swarm's
# DNS round robin; this needs root, and the one-replica run is printed either way). The load
# generator (`mlswarm load`) spreads its clients over the name's addresses and prints which
# replicas answered. Both runs are repeated with PREDICT_THREADS=1 (one LibTorch thread per
# forward pass in each replica) unless PREDICT_THREADS already is 1.
#
#   bench/serve_scale.sh        (after scripts/build.sh)
#   CLIENTS=16 SECONDS_PER_RUN=15 bench/serve_scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-16}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.4 61576

# Two replicas, one port, two addresses; no trainers to find (the scan covers only 127.0.0.4/32's
# port, now closed). Started twice: LibTorch's threads per forward pass as configured (default
# one per core), then one each.
replicas=()
start_replicas() {  # PREDICT_THREADS
  for address in 127.0.0.2 127.0.0.3; do
    "$build/controller/ml_controller" --host "$address" --port 61575 --subnet 127.0.0.4/32 --train-port 61576 \
      --home-dir "$work" --predict-threads "$1" ${CONTROLLER_ARGS:-} >>"$work/controller-$address.log" 2>&1 &
    replicas+=($!)
    pids+=($!)
    wait_http "http://$address:61575/healthz"
  done
  [[ -s $work/body.json ]] || curl -sf 'http://127.0.0.2:61575/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
    /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["examples"]; print(json.dumps({"model_id":"bench","examples":e}))' \
    >"$work/body.json"
  for address in 127.0.0.2 127.0.0.3; do  # each replica loads the model once before measuring
    curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data @"$work/body.json" "http://$address:61575/predict"
  done
}
stop_replicas() {
  kill -TERM "${replicas[@]}"
  wait "${replicas[@]}" 2>/dev/null || true
  replicas=()
}
load() {  # URL LABEL
  "$build/cli/mlswarm" --url "$1" load --body-file "$work/body.json" --clients "$CLIENTS" \
    --seconds "$SECONDS_PER_RUN" --label "$2" || true
}
load_by_name() {  # LABEL
  if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null; then
    unshare --mount sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$work/hosts" \
      "$build/cli/mlswarm" --url http://mlswarm-serving:61575 load --body-file "$work/body.json" --clients "$CLIENTS" \
      --seconds "$SECONDS_PER_RUN" --label "$1" || true
  else
    echo "$1: skipped (the private /etc/hosts for the name needs root)"
  fi
}
printf '127.0.0.2 mlswarm-serving\n127.0.0.3 mlswarm-serving\n' >"$work/hosts"

echo "single-image /predict, $CLIENTS concurrent clients, ${SECONDS_PER_RUN}s each, $(nproc) cores"
threads=${PREDICT_THREADS:-0}
for run in "$threads" 1; do
  start_replicas "$run"
  load http://127.0.0.2:61575 "1 replica, PREDICT_THREADS=$run"
  load_by_name "2 replicas behind one name, PREDICT_THREADS=$run"
  stop_replicas
  [[ $threads == 1 ]] && break
done
echo "every run shares this machine's $(nproc) cores with the load generator; replicas on separate nodes each bring"
echo "their own. Two replicas on one node with one LibTorch thread per core each oversubscribe it (GNU OpenMP"
echo "spin-waits): give each PREDICT_THREADS=1 there."
