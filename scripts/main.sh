#!/usr/bin/env bash
# The main job: magnitude and random pruning on real Fashion-MNIST (Caffe LeNet-5,
# 4-bit), both protocols, 3 seeds; then the leaderboard regenerated and printed.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" -m pytest suites/classification/lenet5_fashion_mnist.yaml \
  --method magnitude --method random -n 2 -q -p no:cacheprovider "$@"
status=$?
"$VENV/bin/prunebench" leaderboard --print
exit $status
