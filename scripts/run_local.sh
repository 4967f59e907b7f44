#!/usr/bin/env bash
# The README's main command: sets up, builds, and runs a local mlswarm cluster without
# Docker: one controller (127.0.0.1:48515) and trainers on loopback addresses (127.0.0.2,
# 127.0.0.3, ... all on port 48516) that the controller finds by scanning 127.0.0.0/24, the
# same code path as on an overlay network. A real Fashion-MNIST job goes in through
# `curl controller/train`, its progress is shown, then test images go through
# `curl controller/predict` and the accuracy is printed.
# Everything started here is stopped on exit or Ctrl-C.
#
#   EPOCHS=3 EXAMPLES=60000 TRAINERS=2 scripts/run_local.sh
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-3}
EXAMPLES=${EXAMPLES:-60000}
TRAINERS=${TRAINERS:-2}
TRAIN_PORT=${TRAIN_PORT:-48516}
CONTROLLER_PORT=${CONTROLLER_PORT:-48515}
PREDICT_COUNT=${PREDICT_COUNT:-1000}
MODEL_ID=${MODEL_ID:-fmnist-local}
export HOME_DIR=${HOME_DIR:-$PWD/var}

scripts/install_deps.sh
scripts/build.sh >/dev/null
mkdir -p "$HOME_DIR/logs"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() {  # url, seconds
  local deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$1"; do
    ((SECONDS < deadline)) || { echo "no answer from $1" >&2; return 1; }
    sleep 0.2
  done
}

for i in $(seq 2 $((TRAINERS + 1))); do
  ./build/trainer/ml_trainer --host "127.0.0.$i" --port "$TRAIN_PORT" \
    >"$HOME_DIR/logs/trainer-127.0.0.$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 2 $((TRAINERS + 1))); do wait_http "http://127.0.0.$i:$TRAIN_PORT/healthz" 30; done
echo "trainers up on 127.0.0.2..127.0.0.$((TRAINERS + 1)):$TRAIN_PORT (logs in $HOME_DIR/logs)"

./build/controller/ml_controller --host 127.0.0.1 --port "$CONTROLLER_PORT" --subnet 127.0.0.0/24 \
  --train-port "$TRAIN_PORT" >"$HOME_DIR/logs/controller.log" 2>&1 &
pids+=($!)
controller="http://127.0.0.1:$CONTROLLER_PORT"
wait_http "$controller/healthz" 30
deadline=$((SECONDS + 30))
until [[ $(curl -s "$controller/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["trainers"]))') == "$TRAINERS" ]]; do
  ((SECONDS < deadline)) || { echo "the controller did not find $TRAINERS trainers" >&2; exit 1; }
  sleep 0.2
done
echo "controller on 127.0.0.1:$CONTROLLER_PORT sees $TRAINERS trainers"

job=$(curl -sf -X POST "$controller/train" -H 'Content-Type: application/json' -d "{
  \"model_id\": \"$MODEL_ID\", \"model_type\": \"convnet\", \"dataset\": \"fashion-mnist\",
  \"example_idxs\": [0, $EXAMPLES],
  \"train_opts\": {\"epochs\": $EPOCHS, \"batch_size\": 128, \"lr\": 0.05, \"optimizer\": \"sgd\",
                   \"momentum\": 0.9, \"weight_decay\": 0.0005, \"seed\": 1}}")
job_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])' <<<"$job")
echo "job $job_id submitted: model $MODEL_ID, $EPOCHS epochs on $EXAMPLES Fashion-MNIST images"

while true; do
  state=$(curl -sf "$controller/jobs/$job_id" | python3 -c '
import json, sys
j = json.load(sys.stdin)
acc = "-" if j["accuracy"] is None else "%.4f" % j["accuracy"]
loss = "-" if j["loss"] is None else "%.4f" % j["loss"]
eta = "-" if j["eta_s"] is None else "%.0fs" % j["eta_s"]
print(j["state"], "on", j["trainer"] or "-", "epoch %d/%d step %d/%d  %5.1f%%  loss %s  test acc %s  %.0f images/s  eta %s" % (
    j["epoch"], j["epochs"], j["step"], j["steps_per_epoch"], 100 * j["progress"], loss, acc,
    j["images_per_s"], eta))
if j["error"]: print("error:", j["error"])')
  printf '\r%-100s' "$state"
  case "$state" in succeeded*|failed*|cancelled*) echo; break ;; esac
  sleep 1
done
[[ $state == succeeded* ]] || exit 1
curl -sf "$controller/models/$MODEL_ID" | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for e in meta["epochs"]:
    print("epoch %2d  train loss %.4f  test loss %.4f  test accuracy %.4f  %.0f images/s" % (
        e["epoch"], e["train_loss"], e["test_loss"], e["accuracy"], e["images_per_s"]))'

# Serving: the first PREDICT_COUNT test images, in pages of 500, through /predict.
python3 - "$controller" "$MODEL_ID" "$PREDICT_COUNT" <<'PY'
import json, sys, time, urllib.request
controller, model_id, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
right = seen = 0
t0 = time.time()
for start in range(0, total, 500):
    count = min(500, total - start)
    page = json.load(urllib.request.urlopen(
        f"{controller}/datasets/fashion-mnist/examples?split=test&start={start}&count={count}"))
    body = json.dumps({"model_id": model_id, "examples": page["examples"]}).encode()
    request = urllib.request.Request(f"{controller}/predict", body, {"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request))
    right += sum(p == l for p, l in zip(answer["class_idxs"], page["labels"]))
    seen += count
print(f"/predict on {seen} test images: accuracy {right / seen:.4f} (model {model_id} version "
      f"{answer['version']}, {time.time() - t0:.1f} s); first: {answer['class_tags'][:5]}")
PY
