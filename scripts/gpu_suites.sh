#!/usr/bin/env bash
# Long suites on a lent CUDA machine (16 cores, one GPU), as resumable lanes run side by
# side until a deadline; every finished point is a record under $OUT/results, so what the
# deadline cuts off resumes later, here or on CPU (`pytest <suite> --results results`
# reuses the records it finds).  Dense models the run trained are copied to $OUT/dense
# (the local cache's format) so later runs reuse them.
#   OUT=... LIMIT_S=540 bash scripts/gpu_suites.sh "LANE" ["LANE" ...]
# A LANE is "WORKERS|SUITE [pytest args];SUITE [pytest args];..." run in order.
# Wheels in .whl/ (prunebench built from a commit, and what the machine lacks) are
# installed into a private target; data comes from $DATA_ROOT (default .devdata) and
# cached dense models from $PRUNEBENCH_CACHE (default .devcache).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-suites}
PY=${PY:-python3}
LIMIT_S=${LIMIT_S:-540}
DATA_ROOT=${DATA_ROOT:-.devdata}
export PRUNEBENCH_CACHE=${PRUNEBENCH_CACHE:-$PWD/.devcache}
export PYTHONUNBUFFERED=1
start=$(date +%s)
deadline=$((start + LIMIT_S))
mkdir -p "$OUT/results" "$OUT/logs" "$OUT/dense" "$PRUNEBENCH_CACHE/dense"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY -c "import torch, prunebench, snntorch, torch_pruning, xdist; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'prunebench', prunebench.__file__)" || exit 1
touch "$OUT/.start"

run_lane() {
    local n=$1 steps=$2 i=0
    IFS=';' read -ra parts <<< "$steps"
    for part in "${parts[@]}"; do
        i=$((i + 1))
        local left=$((deadline - $(date +%s)))
        [ "$left" -le 20 ] && { echo "lane $n: no time left for: $part"; break; }
        local s0=$(date +%s)
        # eval: a step's own quoting holds, e.g. -k 'equal_compression and not b10-'
        eval "timeout --signal=INT --kill-after=15 $left $PY -m pytest $part -n $n --device ${DEVICE:-cuda} \
            --data-root $DATA_ROOT --results $OUT/results --wandb off -p no:cacheprovider -q" \
            > "$OUT/logs/lane-$n-$i.log" 2>&1
        echo "lane $n step $i ($part): rc $? in $(( $(date +%s) - s0 )) s; $(tail -1 "$OUT/logs/lane-$n-$i.log")"
    done
}

pids=()
for lane in "$@"; do
    run_lane "${lane%%|*}" "${lane#*|}" &
    pids+=($!)
done
wait "${pids[@]}"
# dense models trained here, for later runs anywhere
find "$PRUNEBENCH_CACHE/dense" -newer "$OUT/.start" \( -name '*.json' -o -name '*.safetensors' \) -exec cp {} "$OUT/dense/" \;
for d in "$OUT"/results/*/; do echo "$(basename "$d"): $(ls "$d" | grep -c '\.json$') records"; done
# a lent machine returns few files: one archive each for records, dense models and logs
for part in results dense logs; do
    tar -czf "$OUT/$part.tar.gz" -C "$OUT" "$part" && rm -rf "${OUT:?}/$part"
done
rm -f "$OUT/.start"
echo "total $(( $(date +%s) - start )) s"
