#!/usr/bin/env bash
# What serving through a name costs: single-image /predict against one controller in alternating
# short rounds (`mlswarm load`), at each client count, to
#   model      the model id itself
#   name       a served name pinning that model (the deployment's lookup)
#   canary     a name in a canary step of 50% (half the requests answered by the candidate), its
#              agreement gate off
#   agree      the same with the agreement gate on: each of the candidate's requests also
#              classified by the stable in the background
#   shadow     a name in its shadow phase at 100% (every request also classified by the candidate
#              in the background)
# Prints every round, then the medians and each one's requests/s and p50 against `model`.
#
#   bench/rollout.sh            (after scripts/build.sh)
#   CLIENT_COUNTS="16 64" ROUNDS=5 SECONDS_PER_ROUND=5 bench/rollout.sh
#   TARGETS="bench name" ROUNDS=9 bench/rollout.sh      (the name alone against the model id)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENT_COUNTS=${CLIENT_COUNTS:-16 64}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
TARGETS=${TARGETS:-bench name canary agree shadow}  # bench: the model id itself, first in each round
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
for name in name canary agree shadow; do put "/deployments/$name" '{"model_id": "bench"}'; done
lenient='"gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1, "min_agreement": 0}, "eval_idxs": [0, 500]'
agreeing='"gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1, "min_agreement": 0.01}, "eval_idxs": [0, 500]'
post /deployments/canary/rollout "{\"model_id\": \"bench2\", \"shadow_seconds\": 0, \"steps\": [50], \"step_seconds\": 86400, $lenient}"
post /deployments/agree/rollout "{\"model_id\": \"bench2\", \"shadow_seconds\": 0, \"steps\": [50], \"step_seconds\": 86400, $agreeing}"
post /deployments/shadow/rollout "{\"model_id\": \"bench2\", \"shadow_seconds\": 86400, $lenient}"
deadline=$((SECONDS + 120))
until [[ $(state canary) == canary && $(state agree) == canary && $(state shadow) == shadow ]]; do
  ((SECONDS < deadline)) || bench_die "the rollouts did not reach their phases (logs in $work)"
  sleep 0.5
done
examples=$(curl -sf "$url/datasets/fashion-mnist/examples?split=test&start=0&count=1" |
  /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["examples"]))')
for target in bench name canary agree shadow; do
  echo "{\"model_id\": \"$target\", \"examples\": $examples}" >"$work/$target.json"
done

echo "single-image /predict through a name, ${SECONDS_PER_ROUND} s rounds alternating, $ROUNDS rounds each, $(nproc) cores"
for clients in $CLIENT_COUNTS; do
  for ((round = 1; round <= ROUNDS; ++round)); do
    for target in $TARGETS; do
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
# Rounds run in order model, name, canary, agree, shadow: each target is set against the `model`
# round just before it (paired, so that the machine's drift over minutes cancels out).
print("\nmedians; the change is the median of each round against the `model` round just before it")
print("%7s  %-7s %10s %8s %8s %10s %10s" % ("clients", "target", "req/s", "p50 ms", "p99 ms", "req/s", "p50"))
for clients in sorted({r["clients"] for r in rounds}):
    of = [r for r in rounds if r["clients"] == clients]
    base = {}
    pairs = {}
    for r in of:
        if r["label"] == "model":
            base = r
        pairs.setdefault(r["label"], []).append((r, base))
    for label in ("model", "name", "canary", "agree", "shadow"):
        runs = pairs.get(label, [])
        if not runs:
            continue
        med = lambda k: statistics.median(r[k] for r, _ in runs)
        rps = statistics.median(100 * (r["requests_per_s"] / b["requests_per_s"] - 1) for r, b in runs)
        p50 = statistics.median(r["p50_ms"] - b["p50_ms"] for r, b in runs)
        print("%7d  %-7s %10.0f %8.2f %8.2f %+9.1f%% %+8.2f ms" % (
            clients, label, med("requests_per_s"), med("p50_ms"), med("p99_ms"), rps, p50))
PY
echo "second opinions dropped (their queue full): ${dropped:-none}"
sleep 2 # the replica's figures are flushed every second
for name in agree shadow; do
  curl -sf "$url/deployments/$name" | /usr/bin/python3 -c '
import json, sys
f = json.load(sys.stdin)["rollout"]["phase_figures"]
print("%s: %d requests answered by the stable, %d second opinions (the candidate'"'"'s %d), %d compared" % (
    sys.argv[1], f["stable_requests"], f["compared"], f["candidate_requests"], f["compared"]))' "$name"
done
