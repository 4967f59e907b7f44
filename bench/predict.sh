#!/usr/bin/env bash
# Predict benchmark: single-image /predict against mlswarm's controller and, in the same run on
# the same machine, against what users write today: Flask under gunicorn (2 sync workers)
# with PyTorch, serving the same architecture with the same weights' shape. Short rounds of
# the two alternate (the machine drifts: the same comparison gave 2.5x at one hour and 1.9x
# the next), at each client count; it prints every round, then the medians of requests/s and
# p99 and the median of the per-round ratios, beside the forward-pass ceiling of the same
# model measured here too (normalise, forward, softmax on a resident batch: no HTTP). Each round
# also records the share of CPU time the hypervisor stole meanwhile (/proc/stat's steal): on a
# shared virtual machine that, not the code, is most of the drift between rounds.
#
#   bench/predict.sh            (after scripts/build.sh; installs the baseline's packages)
#   CLIENT_COUNTS="16 64" ROUNDS=5 SECONDS_PER_ROUND=5 GUNICORN_WORKERS=2 bench/predict.sh
#   CONTROLLER_ARGS="--predict-threads 2" bench/predict.sh
#   COMPARE_ARGS="--predict-max-batch 8" bench/predict.sh   (a second controller in the same rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENT_COUNTS=${CLIENT_COUNTS:-16 64}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
GUNICORN_WORKERS=${GUNICORN_WORKERS:-2}
scripts/install_deps.sh python3-torch python3-flask gunicorn
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61596

# shellcheck disable=SC2086 # CONTROLLER_ARGS is a list of options
"$build/controller/ml_controller" --host 127.0.0.1 --port 61595 --subnet 127.0.0.0/30 --train-port 61596 \
  --home-dir "$work" ${CONTROLLER_ARGS:-} >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:61595/healthz
# COMPARE_ARGS: a second controller with these options (e.g. the hand-set batching of before:
# "--predict-max-batch 8") in the same rounds, labelled mlswarm-compare.
if [[ -n ${COMPARE_ARGS:-} ]]; then
  # shellcheck disable=SC2086 # COMPARE_ARGS is a list of options
  "$build/controller/ml_controller" --host 127.0.0.1 --port 61593 --subnet 127.0.0.0/30 --train-port 61596 \
    --home-dir "$work" $COMPARE_ARGS >"$work/controller-compare.log" 2>&1 &
  pids+=($!)
  wait_http http://127.0.0.1:61593/healthz
fi
curl -sf 'http://127.0.0.1:61595/datasets/fashion-mnist/examples?split=test&start=0&count=1' |
  /usr/bin/python3 -c 'import json,sys; e=json.load(sys.stdin)["examples"]; print(json.dumps({"model_id":"bench","examples":e}))' \
  >"$work/body.json"

(cd bench && TORCH_THREADS=1 /usr/bin/gunicorn --workers "$GUNICORN_WORKERS" --worker-class sync \
  --bind 127.0.0.1:61594 --log-level warning flask_predict_server:app) >"$work/gunicorn.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 60))
until curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' --data @"$work/body.json" http://127.0.0.1:61594/predict; do
  ((SECONDS < deadline)) || { tail "$work/gunicorn.log"; bench_die "the Flask baseline did not answer on 127.0.0.1:61594 within 60 s"; }
  sleep 0.3
done

flask_label="flask+gunicorn(${GUNICORN_WORKERS} sync)+pytorch"
echo "single-image /predict, ${SECONDS_PER_ROUND} s rounds alternating, $ROUNDS rounds each, $(nproc) cores"
cpu_times() { head -1 /proc/stat; }  # "cpu user nice system idle iowait irq softirq steal ..."
load() {  # URL CLIENTS LABEL; each round's line gets the share of CPU time the hypervisor stole
  local before after round
  before=$(cpu_times)
  round=$("$build/cli/mlswarm" --url "$1" load --body-file "$work/body.json" --clients "$2" --seconds "$SECONDS_PER_ROUND" \
    --label "$3") || true
  after=$(cpu_times)
  [[ -n $round ]] || return 0
  /usr/bin/python3 -c '
import json, sys
line, a, b = json.loads(sys.argv[1]), sys.argv[2].split()[1:], sys.argv[3].split()[1:]
d = [int(y) - int(x) for x, y in zip(a, b)]
line["steal_pct"] = round(100.0 * d[7] / max(1, sum(d[:8])), 1) if len(d) > 7 else None
print(json.dumps(line))' "$round" "$before" "$after" | tee -a "$work/rounds.jsonl"
}
for clients in $CLIENT_COUNTS; do
  for ((round = 1; round <= ROUNDS; ++round)); do
    load http://127.0.0.1:61595 "$clients" mlswarm
    if [[ -n ${COMPARE_ARGS:-} ]]; then load http://127.0.0.1:61593 "$clients" mlswarm-compare; fi
    load http://127.0.0.1:61594 "$clients" "$flask_label"
  done
done
"$build/bench/bench_forward_ceiling" --home-dir "$work" --model-id bench --batches 1,8,16,32 \
  --threads "${CEILING_THREADS:-$(nproc)}" >"$work/ceiling.jsonl"
serving=$(curl -sf http://127.0.0.1:61595/status)
/usr/bin/python3 - "$work/rounds.jsonl" "$work/ceiling.jsonl" "$serving" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[1])]
print("\nmedians (mlswarm vs the Flask baseline; ratio = median of the per-round ratios)")
print("%7s  %-10s %10s %8s %8s   %-10s %10s %8s %8s   %6s   %s" % (
    "clients", "server", "req/s", "p50 ms", "p99 ms", "baseline", "req/s", "p50 ms", "p99 ms", "ratio", "stolen"))
for clients in sorted({r["clients"] for r in rounds}):
    ours = [r for r in rounds if r["clients"] == clients and r["label"] == "mlswarm"]
    base = [r for r in rounds if r["clients"] == clients and not r["label"].startswith("mlswarm")]
    other = [r for r in rounds if r["clients"] == clients and r["label"] == "mlswarm-compare"]
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    ratio = statistics.median(a["requests_per_s"] / max(b["requests_per_s"], 1e-9) for a, b in zip(ours, base))
    failed = sum(r["failed"] for r in ours + base)
    steal = [r["steal_pct"] for r in ours + base if r.get("steal_pct") is not None]
    print("%7d  %-10s %10.0f %8.2f %8.2f   %-10s %10.0f %8.2f %8.2f   %5.2fx   %s%s" % (
        clients, "mlswarm", med(ours, "requests_per_s"), med(ours, "p50_ms"), med(ours, "p99_ms"),
        "flask", med(base, "requests_per_s"), med(base, "p50_ms"), med(base, "p99_ms"), ratio,
        "%4.1f%%" % statistics.median(steal) if steal else "  n/a",
        "  (%d failed requests)" % failed if failed else ""))
    if other:
        print("%7d  %-10s %10.0f %8.2f %8.2f   (COMPARE_ARGS, same rounds; ratio to flask %.2fx, to mlswarm %.2fx)" % (
            clients, "compare", med(other, "requests_per_s"), med(other, "p50_ms"), med(other, "p99_ms"),
            statistics.median(a["requests_per_s"] / max(b["requests_per_s"], 1e-9) for a, b in zip(other, base)),
            statistics.median(a["requests_per_s"] / max(b["requests_per_s"], 1e-9) for a, b in zip(other, ours))))
    quiet = [r for r in ours if r.get("steal_pct") is not None and r["steal_pct"] < 2.0]
    if steal and quiet and len(quiet) < len(ours):
        print("%7s  mlswarm in the %d of %d rounds with under 2%% stolen: %.0f req/s, p99 %.2f ms" % (
            "", len(quiet), len(ours), med(quiet, "requests_per_s"), med(quiet, "p99_ms")))
print("\nforward-pass ceiling of the same model (resident batch, no HTTP; 'served': batch norm folded, channels-last):")
for line in open(sys.argv[2]):
    c = json.loads(line)
    print("  %-8s batch %3d: %6.0f images/s  (%.3f ms a pass, %d threads)" % (
        c["layout"], c["batch"], c["images_per_s"], c["ms_per_pass"], c["threads"]))
s = json.loads(sys.argv[3])["serving"]
print("mlswarm batching: %d requests in %d forward passes (%.1f per pass)" % (
    s["requests"], s["forward_passes"], s["requests"] / max(1, s["forward_passes"])))
for m in s.get("models", []):
    print("  tuned to p99 %.1f ms: model %s batch cap %d, wait %d us; last window p99 %s ms, mean batch %.1f" % (
        s["p99_target_ms"], m["model_id"], m["batch_cap"], m["wait_us"], m["p99_ms"], m["mean_batch"]))
PY
