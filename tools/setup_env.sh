#!/usr/bin/env bash
# Create .venv with mmattn's pinned stack. Idempotent: a second run with unchanged pins returns at
# once; the mmcv wheel (built from source with its ops) is cached outside the repo, keyed by the
# mmcv, torch and Python versions and the device kind (cpu / cuda), so a fresh venv re-uses it.
#
# Environment: PYTHON (default python3.11), VENV (default .venv),
#              MMATTN_CACHE (default ~/.cache/mmattn), MAX_JOBS (default: number of cores).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-$ROOT/.venv}
CACHE=${MMATTN_CACHE:-$HOME/.cache/mmattn}
REQ=$ROOT/requirements
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
STAMP=$VENV/.mmattn-setup

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

want=$(cat "$REQ"/*.txt "$ROOT/tools/setup_env.sh" "$ROOT/setup.py" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PYTHON --version)"
  $PYTHON -m venv "$VENV"
fi
C="-c $REQ/constraints.txt"

log "build tools (setuptools<81: mmcv's setup.py imports pkg_resources)"
$PIP install -q $C pip wheel setuptools ninja packaging

log "torch + torchvision"
$PIP install -q $C torch torchvision

# ---------------------------------------------------------------- mmcv 2.1.0 with its ops
PYV=$($VENV/bin/python -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
TORCHV=$($VENV/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if $VENV/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
   || [ "${FORCE_CUDA:-0}" = "1" ]; then
  KIND=cuda$($VENV/bin/python -c 'import torch; print(torch.version.cuda)')
  export FORCE_CUDA=1
else
  KIND=cpu
fi
MMCV_VER=$(sed -n 's/^mmcv==//p' "$REQ/constraints.txt")
WHEELDIR=$CACHE/wheels/mmcv-$MMCV_VER-torch$TORCHV-$PYV-$KIND
if ! ls "$WHEELDIR"/mmcv-*.whl >/dev/null 2>&1; then
  log "no cached mmcv wheel in $WHEELDIR: building mmcv $MMCV_VER from source with ops ($KIND)"
  SRC=$(mktemp -d)
  $PIP download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VER" -d "$SRC"
  tar -xzf "$SRC"/mmcv-*.tar.gz -C "$SRC"
  MMCV_SRC=$(find "$SRC" -maxdepth 1 -type d -name "mmcv-*" | head -1)
  # torch >= 2.14 headers need C++20; mmcv's setup.py hard-codes -std=c++14/17.
  sed -i 's/-std=c++1[47]/-std=c++20/g' "$MMCV_SRC/setup.py"
  grep -q 'std=c++20' "$MMCV_SRC/setup.py" || { echo "could not raise mmcv's C++ standard" >&2; exit 1; }
  mkdir -p "$WHEELDIR"
  (cd "$MMCV_SRC" && MMCV_WITH_OPS=1 CFLAGS="-g0 -O2" CXXFLAGS="-g0 -O2" \
     MAX_JOBS=${MAX_JOBS:-$(nproc)} \
     $PIP wheel -v --no-deps --no-build-isolation . -w "$WHEELDIR.tmp" > "$SRC/build.log" 2>&1) || {
    tail -40 "$SRC/build.log" >&2; echo "mmcv build failed, full log: $SRC/build.log" >&2; exit 1; }
  mv "$WHEELDIR.tmp"/mmcv-*.whl "$WHEELDIR/" && rmdir "$WHEELDIR.tmp"
  rm -rf "$SRC"
  log "mmcv wheel cached in $WHEELDIR"
else
  log "re-using cached mmcv wheel $(ls "$WHEELDIR"/mmcv-*.whl)"
fi
$PIP install -q $C --no-deps "$WHEELDIR"/mmcv-*.whl
$PIP install -q $C addict mmengine opencv-python pyyaml yapf

# ---------------------------------------------------------------- the rest
log "mmdet, mmseg, triton, evaluation packages"
$PIP install -q $C -r "$REQ/runtime.txt"
log "onnx export + onnxruntime (test_compile_export.py's ONNX tests; new packages only, nothing pinned moves)"
$PIP install -q $C onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 onnx-ir==1.1.0 \
  protobuf==7.36.2 ml_dtypes==0.6.0 flatbuffers==25.12.19
log "openmim (mim search / download mmattn; opendatalab 0.0.10 would pull openxlab and downgrade the stack)"
$PIP install -q $C openmim==0.3.9 opendatalab==0.0.9 click==8.5.1 colorama==0.4.6 model-index==0.1.11 \
  ordered-set==4.1.0 pycryptodome==4.4.0 Markdown==3.11.3 tabulate==0.10.0
log "timm, mmdet3d and its dataset SDKs (--no-deps)"
$PIP install -q $C --no-deps -r "$REQ/nodeps.txt"
log "mmattn (editable)"
$PIP install -q $C --no-deps --no-build-isolation -e "$ROOT"

$VENV/bin/python -c 'import numpy, sys; sys.exit(0 if numpy.__version__.startswith("2.") else "numpy fell to " + numpy.__version__)'
$VENV/bin/python -c 'import mmattn, mmcv.ops, mmdet, mmseg, mmdet3d, mmdet3d.evaluation, mmdet3d.datasets, mmdet3d.models, mmdet3d.engine, mmdet3d.visualization, timm, triton' \
  || { echo "the stack does not import" >&2; exit 1; }
echo "$want" > "$STAMP"
log "done in $(( $(date +%s) - start )) s"
