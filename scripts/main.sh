#!/usr/bin/env bash
# The main job: magnitude and random pruning on real Fashion-MNIST (Caffe LeNet-5,
# 4-bit quantization-aware), both protocols, 3 of the suite's 5 seeds, the 1-epoch rung of
# its budget ladder. It runs into its own results store (runs/main/,
# not the committed results/), writes and prints its own leaderboard, then prints its
# cells beside the committed reference figures with the difference.
#   bash scripts/main.sh [--publish] [pytest options...]
# --publish also copies this run's records into the committed results/ and
# regenerates leaderboards/ from it (for maintainers; never done otherwise).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
OUT=${PRUNEBENCH_MAIN_OUT:-runs/main}
PUBLISH=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--publish" ]; then PUBLISH=1; else args+=("$arg"); fi
done
"$VENV/bin/python" -m pytest suites/classification/lenet5_fashion_mnist.yaml \
  --method magnitude --method random --seeds 0,1,2 -k "b1-s" -n 2 -q -p no:cacheprovider \
  --results "$OUT/results" "${args[@]}"
status=$?
"$VENV/bin/prunebench" leaderboard --results "$OUT/results" --out "$OUT/leaderboards" --print
echo
echo "== this run beside the committed reference (results/) =="
"$VENV/bin/prunebench" compare "$OUT/results" --reference results
if [ "$PUBLISH" = "1" ]; then
  "$VENV/bin/prunebench" publish "$OUT/results" --into results && "$VENV/bin/prunebench" leaderboard
fi
exit $status
