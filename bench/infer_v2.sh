#!/usr/bin/env bash
# Open Inference Protocol benchmark: single-image requests at 16 concurrent clients against
# one controller, in the same run: our JSON /predict, v2 infer with JSON data, and v2 infer
# with the binary tensor data extension (784 FP32 pixels as raw bytes). requests/s, p50, p99.
#
#   bench/infer_v2.sh            (after scripts/build.sh)
#   CLIENTS=16 SECONDS_PER_RUN=15 bench/infer_v2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-16}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-15}
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
"$build/trainer/ml_trainer" --host 127.0.0.2 --port 48586 --home-dir "$work" >"$work/trainer.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.2:48586/healthz
curl -sf -X POST http://127.0.0.2:48586/train -d '{"model_id":"bench","job_id":"bench","example_idxs":[0,2000],"train_opts":{"epochs":1}}' >/dev/null
until curl -sf http://127.0.0.2:48586/jobs/bench | grep -q '"state":"succeeded"'; do sleep 0.5; done
kill -TERM "${pids[0]}"

"$build/controller/ml_controller" --host 127.0.0.1 --port 48585 --subnet 127.0.0.0/30 --train-port 48586 \
  --home-dir "$work" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:48585/healthz
curl -sf 'http://127.0.0.1:48585/datasets/fashion-mnist/examples?split=test&start=0&count=1' >"$work/example.json"
header_length=$(python3 - "$work" <<'PY'
import json, struct, sys
work = sys.argv[1]
ex = json.load(open(f"{work}/example.json"))["examples"]
flat = [v for row in ex[0][0] for v in row]
json.dump({"model_id": "bench", "examples": ex}, open(f"{work}/predict.json", "w"))
json.dump({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": flat}]},
          open(f"{work}/infer.json", "w"))
header = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 4 * len(flat)}}],
                     "parameters": {"binary_data_output": True}}).encode()
open(f"{work}/infer.bin", "wb").write(header + struct.pack("<784f", *flat))
print(len(header))
PY
)
echo "single-image inference, $CLIENTS concurrent clients, ${SECONDS_PER_RUN}s each, $(nproc) cores, one controller"
load() { "$build/cli/mlswarm" --url http://127.0.0.1:48585 load --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" "$@" || true; }
load --path /predict --body-file "$work/predict.json" --label "/predict (JSON)"
load --path /v2/models/bench/infer --body-file "$work/infer.json" --label "v2 infer (JSON)"
load --path /v2/models/bench/infer --body-file "$work/infer.bin" --content-type application/octet-stream \
  --header "Inference-Header-Content-Length: $header_length" --label "v2 infer (binary tensors)"
