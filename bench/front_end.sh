#!/usr/bin/env bash
# The HTTP front end before and after a change, in one run on one machine: two controllers, this
# build's and BASELINE_BUILD's (a build folder of the earlier commit), serving the same model
# from the same HOME_DIR, loaded in alternating short rounds by `mlswarm load` at each client
# count: single-image /predict, and /predict of an unknown model (a 404: the HTTP path alone,
# no forward pass). Prints every round, then the medians of requests/s, p50 and p99 per server.
#
#   BASELINE_BUILD=/path/to/old/build bench/front_end.sh      (after scripts/build.sh)
#   CLIENT_COUNTS="16 64" ROUNDS=5 SECONDS_PER_ROUND=5 BASELINE_BUILD=... bench/front_end.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BASELINE_BUILD:?set BASELINE_BUILD to the build folder of the commit to compare with}"
CLIENT_COUNTS=${CLIENT_COUNTS:-16 64}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61586

start_controller() {  # BUILD PORT
  "$1/controller/ml_controller" --host 127.0.0.1 --port "$2" --subnet 127.0.0.0/30 --train-port 61586 \
    --home-dir "$work" >"$work/controller-$2.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$2/healthz"
}
start_controller "$build" 61585
start_controller "$BASELINE_BUILD" 61584
curl -sf 'http://127.0.0.1:61585/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
  /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["examples"]; print(json.dumps({"model_id":"bench","examples":e}))' \
  >"$work/predict.json"
sed 's/"model_id": *"bench"/"model_id": "no-such-model"/' "$work/predict.json" >"$work/unknown.json"

load() {  # PORT CLIENTS KIND LABEL
  local body=$work/predict.json status=200
  [[ $3 == 404 ]] && body=$work/unknown.json status=404
  "$build/cli/mlswarm" --url "http://127.0.0.1:$1" load --body-file "$body" --expect-status "$status" \
    --clients "$2" --seconds "$SECONDS_PER_ROUND" --warmup 1 --label "$4 $3" | tee -a "$work/rounds.jsonl" || true
}
echo "the HTTP front end: this build against $BASELINE_BUILD, ${SECONDS_PER_ROUND} s rounds alternating, $(nproc) cores"
for kind in predict 404; do
  for clients in $CLIENT_COUNTS; do
    for ((round = 1; round <= ROUNDS; ++round)); do
      load 61585 "$clients" "$kind" after
      load 61584 "$clients" "$kind" before
    done
  done
done
/usr/bin/python3 - "$work/rounds.jsonl" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[1])]
print("\nmedians (before: the baseline build; after: this one)")
print("%-8s %7s  %-7s %10s %8s %8s %7s" % ("load", "clients", "server", "req/s", "p50 ms", "p99 ms", "failed"))
for kind in ("predict", "404"):
    for clients in sorted({r["clients"] for r in rounds}):
        for who in ("before", "after"):
            rs = [r for r in rounds if r["clients"] == clients and r["label"] == "%s %s" % (who, kind)]
            if not rs:
                continue
            med = lambda k: statistics.median(r[k] for r in rs)
            print("%-8s %7d  %-7s %10.0f %8.2f %8.2f %7d" % (
                kind, clients, who, med("requests_per_s"), med("p50_ms"), med("p99_ms"), sum(r["failed"] for r in rs)))
PY
