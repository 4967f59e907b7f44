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
# shellcheck source=bench/lib.sh
source bench/lib.sh
train_bench_model 127.0.0.2 61586

"$build/controller/ml_controller" --host 127.0.0.1 --port 61585 --subnet 127.0.0.0/30 --train-port 61586 \
  --home-dir "$work" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:61585/healthz
curl -sf 'http://127.0.0.1:61585/datasets/fashion-mnist/examples?split=test&start=0&count=1' >"$work/example.json"
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
load() { "$build/cli/mlswarm" --url http://127.0.0.1:61585 load --clients "$CLIENTS" --seconds "$SECONDS_PER_RUN" "$@" || true; }
load --path /predict --body-file "$work/predict.json" --label "/predict (JSON)"
load --path /v2/models/bench/infer --body-file "$work/infer.json" --label "v2 infer (JSON)"
load --path /v2/models/bench/infer --body-file "$work/infer.bin" --content-type application/octet-stream \
  --header "Inference-Header-Content-Length: $header_length" --label "v2 infer (binary tensors)"
