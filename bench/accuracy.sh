#!/usr/bin/env bash
# Accuracy benchmark: trains one model on the full Fashion-MNIST training split (60,000 images)
# with a real trainer, exactly as a user's job would run, and prints the test accuracy and the
# time of every epoch, then the final figure. The figures in the README come from this script.
#
#   bench/accuracy.sh                                   (the default convnet, 10 epochs)
#   MODEL_TYPE=resnet TRAIN_OPTS='{"epochs":15,"augment":"crop_flip"}' bench/accuracy.sh
#   THREADS=1 bench/accuracy.sh                         (LibTorch threads; 0 = one per core)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_TYPE=${MODEL_TYPE:-convnet}
TRAIN_OPTS=${TRAIN_OPTS:-'{}'}
THREADS=${THREADS:-0}
DEADLINE_S=${DEADLINE_S:-14400}
PORT=${PORT:-61580}
HOST=${HOST:-127.0.0.3}
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh

"$build/trainer/ml_trainer" --host "$HOST" --port "$PORT" --home-dir "$work" --threads "$THREADS" \
  >"$work/trainer.log" 2>&1 &
pids+=($!)
wait_http "http://$HOST:$PORT/healthz"
body=$(/usr/bin/python3 -c '
import json, sys
print(json.dumps({"job_id": "accuracy", "model_id": "accuracy", "model_type": sys.argv[1],
                  "example_idxs": [0, 60000], "train_opts": json.loads(sys.argv[2])}))' "$MODEL_TYPE" "$TRAIN_OPTS")
curl -sf -X POST "http://$HOST:$PORT/train" -d "$body" >/dev/null || bench_die "the trainer refused $body"
echo "Fashion-MNIST, $MODEL_TYPE, train_opts $TRAIN_OPTS, $(nproc) cores, LibTorch threads $THREADS"
start=$SECONDS
deadline=$((SECONDS + DEADLINE_S))
shown=0
while true; do
  state=$(curl -sf "http://$HOST:$PORT/jobs/accuracy" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  if [[ -f "$work/models/accuracy/meta.json" ]]; then
    shown=$(/usr/bin/python3 - "$work/models/accuracy/meta.json" "$shown" "$((SECONDS - start))" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
shown = int(sys.argv[2])
for e in meta["epochs"][shown:]:
    print("epoch %2d  train loss %.4f  test loss %.4f  test accuracy %.4f  %5.0f images/s  (%s s since the start)" % (
        e["epoch"], e["train_loss"], e["test_loss"], e["accuracy"], e["images_per_s"], sys.argv[3]), file=sys.stderr)
print(len(meta["epochs"]))
PY
)
  fi
  case $state in
    succeeded) break ;;
    failed|cancelled) tail "$work/trainer.log"; bench_die "the job ended $state" ;;
  esac
  ((SECONDS < deadline)) || bench_die "the job did not finish within $DEADLINE_S s"
  sleep 2
done
/usr/bin/python3 - "$work/models/accuracy/meta.json" "$((SECONDS - start))" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
accs = [e["accuracy"] for e in meta["epochs"]]
best = max(range(len(accs)), key=accs.__getitem__)
print("final test accuracy %.4f after %d epochs (best %.4f at epoch %d), %s s" % (
    accs[-1], len(accs), accs[best], best + 1, sys.argv[2]))
PY
