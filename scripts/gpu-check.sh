#!/usr/bin/env bash
# One GPU run, end to end (see ../shared/DEVICE.md): unpack .device/, report the device, run the
# CUDA parity tests, compute-sanitizer (memcheck, racecheck) on a small step, the kernel checks
# in cuda/dev, and the GPU benchmark against PyTorch. Logs and a summary go to $OUT.
# Prepare here first: npm run build (with nvcc: EMAE_CUDA=AUTO builds 80;90), scripts/device-pack.sh;
# then run with carry [.device, build, dist].
set -uo pipefail
OUT=${OUT:-/tmp/emae-gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
status() { echo "- $1: $2" | tee -a "$SUMMARY"; }
echo "# emae GPU check $(date -u +%FT%TZ)" > "$SUMMARY"

xz -d < .device/node.xz > /usr/local/bin/node && chmod +x /usr/local/bin/node
tar -xJf .device/node_modules.tar.xz
export LD_LIBRARY_PATH="$PWD/.device${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
node -e "import('./dist/index.js').then(m => console.log(JSON.stringify(m.cudaInfo(), null, 1)))" | tee "$OUT/cudainfo.json"

phase() {  # phase NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  status "$name" "rc=$rc in $((SECONDS - t0)) s ($(tail -1 "$OUT/$name.log" | cut -c1-160))"
  return 0
}

ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
if [ "${SKIP_DEV:-0}" != 1 ]; then
  phase gemm-check 120 bash -c "nvcc -std=c++17 -O3 -arch=sm_$ARCH -I. -Inative cuda/dev/gemm_check.cu -o /tmp/gemm_check && /tmp/gemm_check"
  phase attention-check 120 bash -c "nvcc -std=c++17 -O3 -arch=sm_$ARCH -I. -Inative cuda/dev/attention_check.cu -o /tmp/attention_check && /tmp/attention_check"
fi
phase parity 240 npx ava --verbose --timeout=4m test/cuda.test.ts test/cuda-parity.test.ts
phase smoke 60 node scripts/gpu-smoke.mjs 2
phase memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
phase racecheck 180 compute-sanitizer --tool racecheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  phase bench 300 node --import=tsx bench/gpu_step.ts --json "$OUT/bench.json"
fi
cat "$SUMMARY"
