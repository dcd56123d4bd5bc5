#!/usr/bin/env bash
# Everything prunebench needs on a fresh machine: a venv with the registry's regular
# torch + torchvision pair, prunebench (non-editable) with its test/data/tracking extras,
# the Debian Fashion-MNIST package and advertorch's pretrained MNIST LeNet-5 weights.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

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
if [ "${EDITABLE:-0}" = "1" ]; then
  $PIP install -q -e ".[test,data,tracking,hardware]"
else
  $PIP install -q --force-reinstall --no-deps . && $PIP install -q ".[test,data,tracking,hardware]"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

"$VENV/bin/prunebench" fetch advertorch-lenet5 >/dev/null 2>&1 \
  || "$VENV/bin/prunebench" fetch advertorch-lenet5 \
  || echo "warning: advertorch weights not fetched; lenet5-mnist items will be skipped" >&2
echo "setup done: $VENV ($("$VENV/bin/python" -c 'import torch, prunebench; print("torch", torch.__version__, "prunebench", prunebench.__version__)'))"
