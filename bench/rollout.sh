#!/usr/bin/env bash
# What serving through a name costs: single-image /predict against one controller in alternating
# short rounds (`mlswarm load`), at each client count, to
#   model      the model id itself
#   name       a served name pinning that model (the deployment's lookup)
#   canary     a name in a canary step of 50% (half the requests answered by the candidate, each
#              of those also classified by the stable in the background, for agreement)
#   shadow     a name in its shadow phase at 100% (every request also classified by the candidate
#              in the background)
# Prints every round, then the medians and each one's requests/s and p50 against `model`.
#
#   bench/rollout.sh            (after scripts/build.sh)
#   CLIENT_COUNTS="16 64" ROUNDS=5 SECONDS_PER_ROUND=5 bench/rollout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENT_COUNTS=${CLIENT_COUNTS:-16 64}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61576
# A second model of the same shape, to be the candidate: bench's files (and its kept
# versions) under another id.
cp -r "$work/models/bench" "$work/models/bench2"
for meta in "$work"/models/bench2/meta.json "$work"/models/bench2/versions/*/meta.json; do
  sed -i 's/"model_id": *"bench"/"model_id": "bench2"/' "$meta"
done

url=http://127.0.0.1:61575
"$build/controller/ml_controller" --host 127.0.0.1 --port 61575 --subnet 127.0.0.0/30 --train-port 61576 \
  --home-dir "$work" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http "$url/healthz"
put() { curl -sf -X PUT -H 'Content-Type: application/json' -d "$2" "$url$1" >/dev/null || bench_die "PUT $1 refused"; }
post() { curl -sf -X POST -H 'Content-Type: application/json' -d "$2" "$url$1" >/dev/null || bench_die "POST $1 refused"; }
state() { curl -sf "$url/deployments/$1" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["state"])'; }
for name in name canary shadow; do put "/deployments/$name" '{"model_id": "bench"}'; done
lenient='"gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1, "min_agreement": 0}, "eval_idxs": [0, 500]'
post /deployments/canary/rollout "{\"model_id\": \"bench2\", \"shadow_seconds\": 0, \"steps\": [50], \"step_seconds\": 86400, $lenient}"
post /deployments/shadow/rollout "{\"model_id\": \"bench2\", \"shadow_seconds\": 86400, $lenient}"
deadline=$((SECONDS + 120))
until [[ $(state canary) == canary && $(state shadow) == shadow ]]; do
  ((SECONDS < deadline)) || bench_die "the rollouts did not reach their phases (logs in $work)"
  sleep 0.5
done
examples=$(curl -sf "$url/datasets/fashion-mnist/examples?split=test&start=0&count=1" |
  /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["examples"]))')
for target in bench name canary shadow; do
  echo "{\"model_id\": \"$target\", \"examples\": $examples}" >"$work/$target.json"
done

echo "single-image /predict through a name, ${SECONDS_PER_ROUND} s rounds alternating, $ROUNDS rounds each, $(nproc) cores"
for clients in $CLIENT_COUNTS; do
  for ((round = 1; round <= ROUNDS; ++round)); do
    for target in bench name canary shadow; do
      label=$target
      [[ $target == bench ]] && label=model
      "$build/cli/mlswarm" --url "$url" load --body-file "$work/$target.json" --clients "$clients" \
        --seconds "$SECONDS_PER_ROUND" --warmup 1 --key-header X-Request-Key --label "$label" |
        tee -a "$work/rounds.jsonl" || true
    done
  done
done
dropped=$(curl -sf "$url/metrics" | grep '^mlswarm_shadow_dropped_total' || true)
/usr/bin/python3 - "$work/rounds.jsonl" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[1])]
print("\nmedians (each against `model`, the model id itself)")
print("%7s  %-7s %10s %8s %8s %10s %10s" % ("clients", "target", "req/s", "p50 ms", "p99 ms", "req/s", "p50"))
for clients in sorted({r["clients"] for r in rounds}):
    med = lambda label, k: statistics.median(r[k] for r in rounds if r["clients"] == clients and r["label"] == label)
    for label in ("model", "name", "canary", "shadow"):
        rps, p50 = med(label, "requests_per_s"), med(label, "p50_ms")
        print("%7d  %-7s %10.0f %8.2f %8.2f %+9.1f%% %+8.2f ms" % (
            clients, label, rps, p50, med(label, "p99_ms"), 100 * (rps / med("model", "requests_per_s") - 1),
            p50 - med("model", "p50_ms")))
PY
echo "second opinions dropped (their queue full): ${dropped:-none}"
