#!/usr/bin/env bash
# One GPU run, end to end (see ../shared/DEVICE.md): unpack .device/, report the device, run the
# CUDA parity tests, the GPU benchmark against PyTorch, and compute-sanitizer (memcheck,
# racecheck) on a small step. Logs and a summary go to $OUT.
# Prepare here: npm run build (nvcc present → CUDA for 80;90), scripts/device-pack.sh; then
#   device run: bash scripts/gpu-check.sh   with carry [.device, dist]
# Environment: SKIP_BENCH=1, SKIP_SANITIZER=1, SKIP_DIST=1, BENCH_BATCHES=64,128
set -uo pipefail
OUT=${OUT:-/tmp/emae-gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
echo "# emae GPU check $(date -u +%FT%TZ)" > "$SUMMARY"
status() { echo "- $1: $2" | tee -a "$SUMMARY"; }

xz -d < .device/node.xz > /usr/local/bin/node && chmod +x /usr/local/bin/node
tar -xJf .device/node_modules.tar.xz
export LD_LIBRARY_PATH="$PWD/.device${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export EMAE_NATIVE_PATH="$PWD/.device/emae.node"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee -a "$SUMMARY"
node -e "import('./dist/index.js').then(m => console.log(JSON.stringify(m.cudaInfo())))" | tee -a "$SUMMARY"

phase() {  # phase NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  status "$name" "rc=$rc in $((SECONDS - t0)) s: $(grep -E 'passed|failed|ERROR SUMMARY|Error|error' "$OUT/$name.log" | tail -2 | tr '\n' ' ' | cut -c1-200)"
}

phase smoke 60 node scripts/gpu-smoke.mjs 3
phase parity 200 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=3m test/cuda.test.ts test/cuda-parity.test.ts
# data parallelism on one GPU: one process over a one-rank NCCL communicator (PyTorch's NCCL wheel)
if [ "${SKIP_DIST:-0}" != 1 ]; then
  nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null)
  export EMAE_NCCL_LIBRARY=${EMAE_NCCL_LIBRARY:-$nccl_dir/lib/libnccl.so.2}
  phase dist_nccl 120 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=2m test/distributed.test.ts --match 'one process*'
fi
# kernel checks from cuda/dev, built by scripts/device-pack.sh (sm_90) when present
[ -x .device/attention_check ] && phase attention_check 90 .device/attention_check
[ -x .device/classifier_check ] && phase classifier_check 60 .device/classifier_check
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  phase bench 240 node --import=tsx bench/gpu_step.ts --batches "${BENCH_BATCHES:-64,128}" --iters 5 --warmup 2 --json "$OUT/bench.json"
  grep -E '^\|' "$OUT/bench.log" >> "$SUMMARY"
fi
if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  phase memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  phase racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
fi
cat "$SUMMARY"
[ -x .device/gemm_check ] && phase gemm_check 150 .device/gemm_check
if [ "${PROFILE:-0}" = 1 ]; then  # kernel-time breakdown of two vit-base steps at batch 32
  phase profile 150 ncu --metrics gpu__time_duration.sum --print-summary per-kernel node scripts/gpu-profile.mjs vit-base 32 2
fi
