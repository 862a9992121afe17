#!/usr/bin/env bash
# Every GPU number of the project in one command on a bare GPU machine (README "GPU verification
# kit"): installs the carried wheels from work_dirs/gpu_wheels, runs tools/gpu_check.py (kernels,
# BiFormer parity, BRA / SLA / backbone benchmarks) on CPU cores 0-3 while mmcv's CPU ops build on
# the other cores (mmseg's model imports need mmcv.ops), then benchmarks BEVANet on the GPU.
#
#   bash tools/gpu_kit.sh OUT_DIR [KIT_BUDGET_S]
#
# Writes OUT_DIR/gpu_check.{json,md}, OUT_DIR/bevanet_gpu.json, OUT_DIR/mmcv_build.log; exits 1 if
# a check failed or a step could not run.
set -uo pipefail
OUT=${1:?usage: bash tools/gpu_kit.sh OUT_DIR [KIT_BUDGET_S]}
BUDGET=${2:-300}
WHEELS=work_dirs/gpu_wheels
PY=${PYTHON:-python3}
mkdir -p "$OUT"
rc=0

$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || { echo "could not install the wheels in $WHEELS" >&2; exit 1; }
export PYTHONPATH=/tmp/site

export PYTHONUNBUFFERED=1
ncpu=$(nproc)
pin() { if command -v taskset >/dev/null; then taskset -c "$@"; else shift; "$@"; fi; }
kit_cpus=0-$(( ncpu > 8 ? 3 : ncpu - 1 ))
build_cpus=$(( ncpu > 8 ? 4 : 0 ))-$(( ncpu - 1 ))
(
  set -e
  mkdir -p /tmp/mmcv && tar -xzf "$WHEELS"/mmcv-*.tar.gz -C /tmp/mmcv
  cd /tmp/mmcv/mmcv-*/
  sed -i 's/-std=c++1[47]/-std=c++20/g' setup.py  # torch >= 2.10 headers need a newer standard
  # CPU ops are enough for the imports; CUDA_VISIBLE_DEVICES= keeps setup.py off the CUDA build
  CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 CFLAGS="-g0 -O2" CXXFLAGS="-g0 -O2" \
    MAX_JOBS=$(( ncpu > 8 ? ncpu - 4 : ncpu )) pin "$build_cpus" \
    "$PY" setup.py build_ext --inplace
) > "$OUT/mmcv_build.log" 2>&1 &
build_pid=$!

echo "== gpu_check (budget ${BUDGET} s) =="
pin "$kit_cpus" "$PY" tools/gpu_check.py --out "$OUT" --budget-s "$BUDGET" || rc=1

echo "== waiting for the mmcv build =="
if wait $build_pid; then
  MMCV_DIR=$(ls -d /tmp/mmcv/mmcv-*/)
  echo "== BEVANet benchmark =="
  PYTHONPATH=$MMCV_DIR:/tmp/site "$PY" tools/analysis_tools/benchmark_bevanet.py \
      --archs s sw base l --sizes 1024x2048 720x960 512x1024 --device cuda \
      --iters 50 --warmup 10 --loop-iters 200 --flops --out "$OUT/bevanet_gpu.json" || rc=1
else
  echo "mmcv build failed (tail of $OUT/mmcv_build.log):" >&2
  tail -20 "$OUT/mmcv_build.log" >&2
  rc=1
fi
exit $rc
