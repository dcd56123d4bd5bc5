#!/usr/bin/env bash
# The GPU path in one run, for a CUDA machine that already has torch (no network
# needed): the gpu-marked tests, the smoke suites on --device cuda through
# pytest-xdist (one GPU per worker), the same suites on CPU for comparison, and the
# 2:4 semi-structured benchmark. Wheels in .whl/ (prunebench and what the machine
# lacks) are installed into a private target first. Everything lands in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$PY -c "import torch, prunebench; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count(), 'prunebench from', prunebench.__file__)"
rc=0
echo "== gpu-marked tests"
$PY -m pytest -m gpu -p no:cacheprovider -q -rs tests/test_gpu.py tests/test_distributed.py 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
SUITES="suites/smoke/lenet5_synthetic.yaml suites/smoke/lanes_synthetic.yaml"
for dev in cuda cpu; do
    echo "== smoke suites on $dev"
    start=$(date +%s)
    $PY -m pytest $SUITES --device "$dev" -n 2 --results "/tmp/res-$dev" --wandb off -p no:cacheprovider -q -rs 2>&1 | tail -15 || rc=1
    echo "smoke suites on $dev: $(( $(date +%s) - start )) s"
    for s in $(ls "/tmp/res-$dev"); do $PY -m prunebench.cli export --results "/tmp/res-$dev" "$s" > "$OUT/smoke-$dev-$s.jsonl"; done
done
echo "== 2:4 semi-structured"
$PY benchmarks/semi_structured_bench.py --out "$OUT/semi_structured.json" || rc=1
exit $rc
