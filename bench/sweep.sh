#!/usr/bin/env bash
# Sweep benchmark: ASHA and random search with the same trials and seed (so the same drawn
# parameters), one after the other on the same two trainers (loopback, real processes, one
# LibTorch thread each), on Fashion-MNIST with the convnet, searching learning rate, weight
# decay, label smoothing and batch size. Prints, side by side, each sweep's best test accuracy,
# the trainer-seconds its trials used and its wall time.
#
#   bench/sweep.sh                                        (after scripts/build.sh)
#   TRIALS=27 R=9 EXAMPLES=60000 bench/sweep.sh           (the full data set: hours on 2 cores)
# TRIALS trials; rungs r=1, eta=3 up to R epochs (random search trains every trial R epochs);
# EXAMPLES training images; TEST_IMAGES test images evaluated after every epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS=${TRIALS:-9}
R=${R:-9}
ETA=${ETA:-3}
SEED=${SEED:-1}
EXAMPLES=${EXAMPLES:-10000}
TEST_IMAGES=${TEST_IMAGES:-10000}
DEADLINE_S=${DEADLINE_S:-14400}
# Ports above the kernel's ephemeral range (32768-60999), so nothing else holds them.
TRAIN_PORT=62030 CONTROLLER_PORT=62031
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

start_two_trainers "$TRAIN_PORT" "$CONTROLLER_PORT"

# sweep ID SCHEDULER_JSON: runs one sweep to its end; prints its result line.
sweep() {
  local body
  body=$(python3 - "$1" "$2" "$TRIALS" "$SEED" "$EXAMPLES" "$TEST_IMAGES" <<'PY'
import json, sys
sweep_id, scheduler, trials, seed, examples, test_images = sys.argv[1:]
print(json.dumps({"sweep_id": sweep_id, "trials": int(trials), "seed": int(seed),
                  "base": {"model_type": "convnet", "dataset": "fashion-mnist",
                           "example_idxs": [0, int(examples)], "test_idxs": [0, int(test_images)]},
                  "space": {"lr": {"type": "log_uniform", "min": 0.003, "max": 0.3},
                            "weight_decay": {"type": "log_uniform", "min": 1e-5, "max": 1e-3},
                            "label_smoothing": {"type": "choice", "values": [0, 0.05, 0.1]},
                            "batch_size": {"type": "choice", "values": [64, 128, 256]}},
                  "scheduler": json.loads(scheduler)}))
PY
)
  curl -sf -X POST "$controller/sweeps" -d "$body" >/dev/null || bench_die "the controller refused $body"
  local start=$SECONDS state
  local deadline=$((SECONDS + DEADLINE_S))
  while true; do
    state=$(curl -sf "$controller/sweeps/$1" | json 'd["state"]')
    [[ $state == running ]] || break
    ((SECONDS < deadline)) || bench_die "sweep $1 did not end within $DEADLINE_S s"
    sleep 2
  done
  [[ $state == succeeded ]] || { tail -20 "$work/controller.log"; bench_die "sweep $1 ended $state"; }
  curl -sf "$controller/sweeps/$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
b = d["best"]
epochs = sum(d["rungs"][t["rung"]] for t in d["trials"])
print("%-7s best %.4f (trial %d, %d epochs, %s)  %7.0f trainer-s  %4d epochs trained  %5d s wall" % (
    sys.argv[1], b["accuracy"], b["trial"], b["epochs"],
    " ".join("%s=%.3g" % (k, v) for k, v in sorted(b["params"].items())),
    d["trainer_seconds"], epochs, int(sys.argv[2])))' "$1" "$((SECONDS - start))"
}

echo "Fashion-MNIST convnet, $EXAMPLES training and $TEST_IMAGES test images, $TRIALS trials (seed $SEED), two trainers of one thread on $(nproc) cores"
asha=$(sweep asha "{\"type\": \"asha\", \"r\": 1, \"eta\": $ETA, \"R\": $R}")
echo "$asha"
random=$(sweep random "{\"type\": \"random\", \"epochs\": $R}")
echo "$random"
python3 - "$asha" "$random" <<'PY'
import re, sys
def parse(line):
    acc = float(re.search(r"best (\S+)", line).group(1))
    secs = float(re.search(r"(\S+) trainer-s", line).group(1))
    return acc, secs
(a_acc, a_s), (r_acc, r_s) = parse(sys.argv[1]), parse(sys.argv[2])
print("ASHA: %+.2f points of accuracy against random search, %.0f%% of its trainer-seconds" % (
    (a_acc - r_acc) * 100, 100 * a_s / r_s))
PY
