#!/usr/bin/env bash
# The README's main command: sets up, builds, and runs a local mlswarm cluster without
# Docker: one controller (127.0.0.1:48515) and trainers on loopback addresses (127.0.0.2,
# 127.0.0.3, ... all on port 48516) that the controller finds by scanning 127.0.0.0/24, the
# same code path as on an overlay network. A real Fashion-MNIST job goes in through
# `mlswarm train --follow` (its progress bar), then test images go through the controller's
# /predict and the accuracy is printed. Everything started here is stopped on exit or Ctrl-C;
# with KEEP_RUNNING=1 the cluster stays up (dashboard, CLI, curl) until Ctrl-C.
#
#   EPOCHS=3 EXAMPLES=60000 TRAINERS=2 KEEP_RUNNING=1 scripts/run_local.sh
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

KEEP_RUNNING=${KEEP_RUNNING:-0}
step() { echo "==> [$1/6] $2"; }

step 1 "Debian packages (apt-get when something is missing)"
scripts/install_deps.sh
mkdir -p "$HOME_DIR/logs"
step 2 "building the daemons and the CLI with cmake into build/ (the first build takes a while on 2 cores; log: $HOME_DIR/logs/build.log)"
if ! TARGETS="ml_trainer ml_controller mlswarm" scripts/build.sh 2>&1 | tee "$HOME_DIR/logs/build.log" |
     { grep --line-buffered -E '^\[ *[0-9]+%\] (Building|Linking)' || true; } | sed -u 's/^/    /'; then
  tail -30 "$HOME_DIR/logs/build.log"
  echo "the build failed; the whole log is $HOME_DIR/logs/build.log" >&2
  exit 1
fi

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

step 3 "starting $TRAINERS trainers on 127.0.0.2..127.0.0.$((TRAINERS + 1)):$TRAIN_PORT"
for i in $(seq 2 $((TRAINERS + 1))); do
  ./build/trainer/ml_trainer --host "127.0.0.$i" --port "$TRAIN_PORT" \
    >"$HOME_DIR/logs/trainer-127.0.0.$i.log" 2>&1 &
  pids+=($!)
done
for i in $(seq 2 $((TRAINERS + 1))); do wait_http "http://127.0.0.$i:$TRAIN_PORT/healthz" 30; done
echo "    trainers up (logs in $HOME_DIR/logs)"
step 4 "starting the controller on 127.0.0.1:$CONTROLLER_PORT, scanning 127.0.0.0/24"

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
echo "    the controller sees $TRAINERS trainers"
export MLSWARM_URL=$controller

step 5 "training: build/cli/mlswarm train --model-id $MODEL_ID --epochs $EPOCHS --examples $EXAMPLES --follow"
./build/cli/mlswarm train --model-id "$MODEL_ID" --dataset fashion-mnist --model-type convnet --epochs "$EPOCHS" \
  --examples "$EXAMPLES" --batch-size 128 --lr 0.05 --follow
curl -sf "$controller/models/$MODEL_ID" | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for e in meta["epochs"]:
    print("epoch %2d  train loss %.4f  test loss %.4f  test accuracy %.4f  %.0f images/s" % (
        e["epoch"], e["train_loss"], e["test_loss"], e["accuracy"], e["images_per_s"]))'

step 6 "serving: the first $PREDICT_COUNT test images through /predict"
# In pages of 500; the first test image is also written as a PNG to try the CLI on.
python3 - "$controller" "$MODEL_ID" "$PREDICT_COUNT" "$HOME_DIR/example-0.png" <<'PY'
import json, struct, sys, time, urllib.request, zlib
controller, model_id, total, png_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
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
first = json.load(urllib.request.urlopen(f"{controller}/datasets/fashion-mnist/examples?split=test&count=1"))
rows = b"".join(b"\x00" + bytes(round(255 * v) for v in row) for row in first["examples"][0][0])
chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
with open(png_path, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
print(f"/predict on {seen} test images: accuracy {right / seen:.4f} (model {model_id} version "
      f"{answer['version']}, {time.time() - t0:.1f} s); first: {answer['class_tags'][:5]}")
PY

if [[ $KEEP_RUNNING == 1 ]]; then
  cat <<EOF

The cluster keeps running (Ctrl-C stops it; logs in $HOME_DIR/logs).
  Dashboard:  http://127.0.0.1:$CONTROLLER_PORT/
  Try:        export MLSWARM_URL=$controller
              build/cli/mlswarm status
              build/cli/mlswarm predict --model $MODEL_ID $HOME_DIR/example-0.png
              build/cli/mlswarm train --epochs 2 --trainers 2 --follow
EOF
  wait
fi
