#!/usr/bin/env bash
# Build mmcv with its compiled ops once and keep the wheel in a cache; later runs reuse it.
# mmcv 2.1.0 (what mmdetection 3.3 needs) ships no wheel for current torch, only source.
# The build needs torch importable (--no-build-isolation; without torch the ops are
# silently dropped), setuptools<81, and C++20 for torch>=2.14 headers.
# Usage: scripts/build_mmcv.sh [PYTHON]   prints the path of the wheel on its last line.
set -euo pipefail
PY=${1:-.venv/bin/python}
# absolute, since the build runs inside the unpacked source tree
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
MMCV_VERSION=${MMCV_VERSION:-2.1.0}
WHEELHOUSE=${PRUNEBENCH_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/prunebench/wheels}
key=$("$PY" -c 'import sys, torch; v = torch.__version__.split("+")[0]; print("torch%s-cp%d%d" % (v, *sys.version_info[:2]))')
dest="$WHEELHOUSE/$key"
cached=$(ls "$dest"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$cached" ]; then
  echo "mmcv $MMCV_VERSION: cached wheel for $key" >&2
  echo "$cached"
  exit 0
fi
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip install -q "setuptools<81" wheel ninja
"$PY" -m pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work"
tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
src="$work/mmcv-$MMCV_VERSION"
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
log="$dest/build.log"
echo "mmcv $MMCV_VERSION: building with ops for $key (about 6 min on 2 cores; log: $log)" >&2
start=$(date +%s)
# Build time is spent parsing torch's headers, 77 times. Debug info (-g, from Python's
# CFLAGS) makes each object ~35x larger and the build ~1.6x slower; -g0, appended after
# Python's flags, drops it. The optimisation level barely matters (-O1 vs -O3: 6%), so
# -O3 stays. A precompiled torch/extension.h was slower still (a 757 MB .gch to load).
# benchmarks/mmcv_build_flags.sh measures this. ccache, when installed, is used by
# torch's ninja build; BASEDIR/NOHASHDIR let a rebuild from a new temp dir hit it.
if ! ( cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} FORCE_CUDA=0 \
    CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" CCACHE_BASEDIR="$work" CCACHE_NOHASHDIR=1 \
    "$PY" -m pip wheel -v --no-build-isolation --no-deps . -w "$work/dist" ) >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "error: the mmcv build failed (whole log: $log)" >&2
  exit 1
fi
wheel=$(ls "$work"/dist/mmcv-*.whl)
# a wheel without the compiled ops must never enter the cache (checked with zipfile:
# `unzip -l | grep -q` under pipefail fails at random when grep closes the pipe early)
if ! "$PY" - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(0 if any(n.startswith("mmcv/_ext") and n.endswith(".so") for n in names) else 1)
PYEOF
then
  echo "error: the mmcv wheel has no mmcv/_ext (were torch and a compiler visible?)" >&2
  exit 1
fi
# copy then rename, so an interrupted copy never looks like a cached wheel
cp "$wheel" "$dest/.partial" && mv "$dest/.partial" "$dest/$(basename "$wheel")"
echo "mmcv $MMCV_VERSION: built in $(( $(date +%s) - start )) s" >&2
ls "$dest"/mmcv-"$MMCV_VERSION"-*.whl | head -n1
