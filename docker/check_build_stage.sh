#!/usr/bin/env bash
# Both Dockerfiles must have the same build stage, instruction for instruction (comments aside):
# Docker's cache then compiles once for both images. A ctest test (label lint).
set -euo pipefail
cd "$(dirname "$0")/.."
stage() { sed -n '/^FROM .* AS build$/,/^FROM .* AS assemble$/p' "$1" | grep -v '^#'; }
train=$(stage Dockerfile_train)
[[ -n $train ]] || { echo "Dockerfile_train has no build stage"; exit 1; }
if ! diff <(echo "$train") <(stage Dockerfile_controller); then
  echo "the build stages of Dockerfile_train and Dockerfile_controller differ (above): keep them identical"
  exit 1
fi
echo "Dockerfile_train and Dockerfile_controller share one build stage ($(echo "$train" | wc -l) lines)"
