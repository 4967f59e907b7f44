#!/usr/bin/env bash
# Data-parallel benchmark: the same training job on one trainer with one LibTorch thread and
# on two trainers with one thread each (loopback, real processes, Gloo allreduce), alternated
# round by round in the same run. Prints training images/s (test-set evaluation excluded),
# the speed-up and the allreduce time per step.
#
#   bench/data_parallel.sh                  (after scripts/build.sh)
#   ROUNDS=3 IMAGES=12000 BATCH=128 bench/data_parallel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
IMAGES=${IMAGES:-12000}
BATCH=${BATCH:-128}
# Ports above the kernel's ephemeral range (32768-60999), so nothing else holds them.
TRAIN_PORT=62010 CONTROLLER_PORT=62011 RDZV_PORT=62020
build=${BUILD_DIR:-build}
work=$(mktemp -d)
# shellcheck source=bench/lib.sh
source bench/lib.sh
die() { bench_die "$@"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

start_two_trainers "$TRAIN_PORT" "$CONTROLLER_PORT" --rdzv-port "$RDZV_PORT"

# run_job MODEL TRAINERS: trains one epoch; prints the training images/s from meta.json.
run_job() {
  local body id state deadline=$((SECONDS + 900))
  body=$(printf '{"model_id":"%s","trainers":%d,"example_idxs":[0,%d],"train_opts":{"epochs":1,"batch_size":%d}}' \
    "$1" "$2" "$IMAGES" "$BATCH")
  id=$(curl -sf -X POST "$controller/train" -H 'Content-Type: application/json' -d "$body" | json 'd["job_id"]')
  until state=$(curl -sf "$controller/jobs/$id" | json 'd["state"]') && [[ $state == succeeded ]]; do
    [[ $state == failed || $state == cancelled ]] && die "job $1 ended $state"
    ((SECONDS < deadline)) || die "job $1 did not finish in time"; sleep 0.5
  done
  json 'd["epochs"][0]["images_per_s"]' <"$work/models/$1/meta.json"
}

echo "round  1 trainer (img/s)  2 trainers (img/s)  speed-up  allreduce ms/step"
one=() two=() ratios=() allreduce=()
for round in $(seq 1 "$ROUNDS"); do
  a=$(run_job "single-$round" 1)
  b=$(run_job "shared-$round" 2)
  ms=$(grep -h "model shared-$round: epoch 1 rank 0 parameters" "$work"/trainer-*.log | sed 's/.* \([0-9.]*\) ms in allreduce.*/\1/')
  grep -h "model shared-$round: epoch 1 rank" "$work"/trainer-*.log | sed 's/.*\(rank [0-9]\).*per step \(.*\)/        \1: \2/' >&2
  ratio=$(python3 -c "print(f'{$b / $a:.2f}')")
  printf '%5d  %18.0f  %18.0f  %8s  %17s\n' "$round" "$a" "$b" "$ratio" "$ms"
  one+=("$a") two+=("$b") ratios+=("$ratio") allreduce+=("$ms")
done
median() { printf '%s\n' "$@" | sort -g | python3 -c 'import sys; v=[float(l) for l in sys.stdin]; print(v[len(v)//2] if len(v)%2 else (v[len(v)//2-1]+v[len(v)//2])/2)'; }
printf 'median %17.0f  %18.0f  %8.2f  %17.2f   (%d images, batch %d, 1 epoch, 1 thread per trainer)\n' \
  "$(median "${one[@]}")" "$(median "${two[@]}")" "$(median "${ratios[@]}")" "$(median "${allreduce[@]}")" "$IMAGES" "$BATCH"
