#!/usr/bin/env bash
# `mlswarm train --follow` on a real terminal: tmux (100 columns) runs it against a local
# controller and trainer on loopback. While the job runs, the screen shows one progress line
# with a bar, epoch, step, loss, images/s and ETA, redrawn in place (never a second copy);
# at the end the command exits 0 and prints the final accuracy under it. Then `mlswarm rollout
# --follow` of its version 2 onto a name serving version 1: one live line redrawn in place, exit
# 0 once promoted.
# usage: tmux_progress.sh ML_TRAINER ML_CONTROLLER MLSWARM DATA_DIR   (exit 77: no tmux)
set -uo pipefail
trainer_bin=$1 controller_bin=$2 cli_bin=$3 data_dir=$4
command -v tmux >/dev/null || { echo "SKIP: tmux is not installed"; exit 77; }

home=$(mktemp -d /tmp/mlswarm-tmux-XXXXXX)
socket="mlswarm-test-$$"
pids=()
cleanup() {
  tmux -L "$socket" kill-server 2>/dev/null
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$home"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$1"; }
poll() {  # poll SECONDS COMMAND...: until the command succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do ((SECONDS < deadline)) || return 1; sleep 0.2; done
}
failed=0 passed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }

train_port=$(free_port 127.0.0.2)
port=$(free_port 127.0.0.1)
"$trainer_bin" --host 127.0.0.2 --port "$train_port" --home-dir "$home" --data-dir "$data_dir" --threads 1 \
  >"$home/trainer.log" 2>&1 &
pids+=($!)
"$controller_bin" --host 127.0.0.1 --port "$port" --subnet 127.0.0.0/30 --train-port "$train_port" \
  --home-dir "$home" --data-dir "$data_dir" --scan-interval-ms 300 >"$home/controller.log" 2>&1 &
pids+=($!)
has_trainer() { curl -sf "http://127.0.0.1:$port/status" | grep -q '"state":"ready"'; }
poll 60 has_trainer || { fail "the controller found no trainer"; tail "$home"/*.log; exit 1; }

tmux -L "$socket" new-session -d -x 100 -y 12 \
  "MLSWARM_URL=http://127.0.0.1:$port '$cli_bin' train --examples 1500 --test-examples 2000 --epochs 2 --model-id tmux-model --follow; echo EXIT=\$?; sleep 600"
screen() { tmux -L "$socket" capture-pane -p; }
bar='epoch [12]/2 \[#*\.*\] +[0-9]+% step [0-9]+/[0-9]+ loss [0-9.]+ [0-9,]+ images/s ETA [0-9]'
samples=0 copies=0 widths="" seen_line=""
sample() {
  local s
  s=$(screen)
  if grep -Eq "$bar" <<<"$s"; then
    samples=$((samples + 1))
    (($(grep -c 'epoch [12]/2' <<<"$s") > 1)) && copies=$((copies + 1))
    widths+="$(grep -Eo '\[#*\.*\]' <<<"$s" | head -1) "
    seen_line=$(grep -E "$bar" <<<"$s" | head -1)
  fi
  grep -q 'EXIT=' <<<"$s"
}
poll 240 sample
final=$(screen)
if ((samples >= 2 && copies == 0)); then
  pass "the progress bar was drawn in place on $samples samples (one line each time), e.g. $seen_line"
  pass "bars seen: $(tr ' ' '\n' <<<"$widths" | sort -u | tr '\n' ' ')"
else
  fail "progress line: $samples samples, $copies with more than one copy"
fi
if grep -q 'EXIT=0' <<<"$final" && grep -Eq 'succeeded: model tmux-model, version 2, test accuracy 0\.[0-9]{4}' <<<"$final"; then
  pass "exit 0 with the final accuracy: $(grep -E 'succeeded:' <<<"$final")"
else
  fail "no success line; the screen:"; echo "$final"
fi
echo "--- the terminal at the end ---"
echo "$final" | sed '/^$/d'

# A rollout followed on the terminal: one live line (the name's state, weight and gates).
tmux -L "$socket" kill-server 2>/dev/null
options='{"eval_idxs": [0, 500], "shadow_seconds": 1, "steps": [50, 100], "step_seconds": 1, '
options+='"min_requests": 0, "gates": {"max_accuracy_drop": 1, "max_class_recall_drop": 1, "min_agreement": 0}}'
MLSWARM_URL="http://127.0.0.1:$port" "$cli_bin" deploy live tmux-model:1 >/dev/null ||
  fail "mlswarm deploy live tmux-model:1"
tmux -L "$socket" new-session -d -x 100 -y 12 \
  "MLSWARM_URL=http://127.0.0.1:$port '$cli_bin' rollout live tmux-model:2 --options '$options' --follow; echo EXIT=\$?; sleep 600"
rollout_samples=0 rollout_copies=0 states=""
rollout_sample() {
  local s
  s=$(screen)
  if grep -q '^live: ' <<<"$s"; then
    rollout_samples=$((rollout_samples + 1))
    (($(grep -c '^live: ' <<<"$s") > 1)) && rollout_copies=$((rollout_copies + 1))
    states+="$(grep -Eo '^live: [a-z_]+' <<<"$s" | head -1 | cut -d' ' -f2) "
  fi
  grep -q 'EXIT=' <<<"$s"
}
poll 120 rollout_sample
final=$(screen)
if ((rollout_samples >= 1 && rollout_copies == 0)) && grep -q 'EXIT=0' <<<"$final" &&
  grep -q '^live: promoted' <<<"$final"; then
  pass "rollout --follow: one line redrawn in place on $rollout_samples samples (states seen: $(tr ' ' '\n' <<<"$states" | sort -u | tr '\n' ' ')), exit 0: $(grep '^live: ' <<<"$final" | cut -c1-90)"
else
  fail "rollout --follow: $rollout_samples samples, $rollout_copies with more than one line; the screen:"
  echo "$final"
fi
echo "$passed passed, $failed failed"
exit $((failed > 0))
