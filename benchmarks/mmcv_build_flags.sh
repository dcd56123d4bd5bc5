#!/usr/bin/env bash
# What scripts/build_mmcv.sh's compiler flags cost: compiles the same sample of
# mmcv 2.1.0's op sources once per flag set, one after another in this run, and
# prints seconds and the ratio against Python's default flags (-g -O3).
#   bash benchmarks/mmcv_build_flags.sh [PYTHON]     (needs torch in PYTHON; ~2.5 min)
set -euo pipefail
PY=${1:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==2.1.0" -d "$work" >/dev/null
tar -xzf "$work"/mmcv-2.1.0.tar.gz -C "$work"
csrc="$work/mmcv-2.1.0/mmcv/ops/csrc"
ti=$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
pyinc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
# the same flags torch's ninja build uses for mmcv, less Python's -g -O3
common="-Wsign-compare -DNDEBUG -fwrapv -Wall -fPIC -I$csrc/common -I$ti -I$ti/torch/csrc/api/include -I$pyinc"
post="-std=c++20 -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_ext"
files="pytorch/nms.cpp pytorch/cpu/nms.cpp pytorch/cpu/roi_align.cpp pytorch/deform_conv.cpp"
base=""
for flags in "-g -O3" "-g0 -O3" "-g0 -O1"; do
  start=$(date +%s.%N)
  for f in $files; do
    CCACHE_DISABLE=1 c++ $common $flags -c "$csrc/$f" -o "$work/x.o" $post 2>/dev/null
  done
  secs=$("$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$start" "$(date +%s.%N)")
  base=${base:-$secs}
  echo "$flags: $secs s for 4 files; ratio to '-g -O3': $("$PY" -c "print(round($secs / $base, 2))")"
done
