#!/usr/bin/env bash
# One GPU run, end to end (see ../shared/DEVICE.md): unpack .device/, report the device, run the
# CUDA parity tests, the GPU benchmark against PyTorch, and compute-sanitizer (memcheck,
# racecheck) on a small step. Logs and a summary go to $OUT.
# Prepare here: npm run build (nvcc present → CUDA for 80;90), scripts/device-pack.sh; then
#   device run: bash scripts/gpu-check.sh   with carry [.device, dist]
# Environment: PHASES (a comma list; default all, in this order:
#   smoke,parity,parity_sync,dist,kernels,gemm,gemm_shapes,parity_bf16,bench,bench_bf16,op_profile,sanitizer,
#   gemm_sanitizer; bench_sync on request),
#   SKIP_BENCH=1, SKIP_SANITIZER=1, SKIP_DIST=1, BENCH_BATCHES=64,128, PROFILE=1.
# The GEMM phases (issue 11): gemm = cuda/dev/gemm_check on every path the device runs (mma, sm80,
# sm90); gemm_shapes = each GEMM of the vit-base K=4 batch-64 step against cuBLAS
# (bench/gpu_gemm_vs_cublas.py → $OUT/gpu-gemm-*.json); parity_bf16 / bench_bf16 = the parity tests
# and the step benchmark with EMAE_CUDA_GEMM=sm90 (or sm80 off Hopper) and EMAE_CUDA_ATTENTION=tc
# (issue 12's tensor-core attention; attention_check in the kernels phase checks and times it).
# op_profile (issue 12): the vit-base batch-64 step under EMAE_PROFILE=1 (CUDA events around every
# Backend op and step, no sync per op): per-op calls and device time, and the steps' device time
# against their ops' (the gaps a CUDA graph could remove), on the default and the bf16 path.
# parity_sync: the parity tests with EMAE_CUDA_STEP_SYNC=once (issue 12: the step's one host sync;
# cuda.test.ts also checks it against the default host flow bit for bit and injects NaNs in both);
# bench_sync: the step benchmark with it, to set beside bench.
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

PHASES=,${PHASES:-smoke,parity,parity_sync,dist,kernels,gemm,gemm_shapes,parity_bf16,bench,bench_bf16,op_profile,sanitizer,gemm_sanitizer},
want() { [[ $PHASES == *,$1,* ]]; }
# the bf16 GEMM path this card runs best: sm90 (wgmma) where the addon's sm_90a code loads
BF16_PATH=$(EMAE_CUDA_GEMM=sm90 node -e "import('./dist/index.js').then(m => console.log(m.cudaInfo().devices[0]?.gemmPath ?? 'none'))")
[ "$BF16_PATH" = sm90 ] || BF16_PATH=sm80
SM90=$([ "$BF16_PATH" = sm90 ] && echo ,sm90)  # appended to path lists
status "bf16 GEMM path" "$BF16_PATH"

want smoke && phase smoke 60 node scripts/gpu-smoke.mjs 3
want parity && phase parity 200 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=3m test/cuda.test.ts test/cuda-parity.test.ts test/profile.test.ts
if want parity_sync; then
  EMAE_CUDA_STEP_SYNC=once phase parity_sync 200 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=3m test/cuda.test.ts test/cuda-parity.test.ts
fi
if want gemm && [ -x .device/gemm_check ]; then
  phase gemm 240 .device/gemm_check
  grep -E '^path |^PASS|^FAIL' "$OUT/gemm.log" | tail -8 >> "$SUMMARY"
fi
if want gemm_shapes && [ -x .device/gemm_check ]; then
  python3 bench/gemm_shapes.py vit-base 4 64 > "$OUT/shapes.txt"
  phase gemm_shapes_ours 150 .device/gemm_check --shapes "$OUT/shapes.txt" --path "mma,sm80$SM90" --reps 20
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//' | tr A-Z a-z)
  phase gemm_shapes 120 python3 bench/gpu_gemm_vs_cublas.py "$OUT/shapes.txt" "$OUT/gemm_shapes_ours.log" "$OUT/gpu-gemm-$card-$(date -u +%F).json"
  tail -2 "$OUT/gemm_shapes.log" >> "$SUMMARY"
fi
if want parity_bf16; then
  EMAE_CUDA_GEMM=$BF16_PATH EMAE_CUDA_ATTENTION=tc phase parity_bf16 200 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=3m test/cuda.test.ts test/cuda-parity.test.ts
fi
# data parallelism on one GPU: one process over a one-rank NCCL communicator (PyTorch's NCCL wheel)
if want dist && [ "${SKIP_DIST:-0}" != 1 ]; then
  nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null)
  export EMAE_NCCL_LIBRARY=${EMAE_NCCL_LIBRARY:-$nccl_dir/lib/libnccl.so.2}
  phase dist_nccl 120 node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=2m test/distributed.test.ts --match 'one process*'
fi
# kernel checks from cuda/dev, built by scripts/device-pack.sh (sm_90) when present
if want kernels; then
  [ -x .device/attention_check ] && phase attention_check 150 .device/attention_check  # simt and tc paths
  grep -E '^\|' "$OUT/attention_check.log" >> "$SUMMARY" 2>/dev/null
  [ -x .device/classifier_check ] && phase classifier_check 60 .device/classifier_check
fi
if want bench && [ "${SKIP_BENCH:-0}" != 1 ]; then
  phase bench 240 node --import=tsx bench/gpu_step.ts --batches "${BENCH_BATCHES:-64,128}" --iters 5 --warmup 2 --json "$OUT/bench.json"
  grep -E '^\|' "$OUT/bench.log" >> "$SUMMARY"
fi
if want bench_bf16 && [ "${SKIP_BENCH:-0}" != 1 ]; then
  EMAE_CUDA_GEMM=$BF16_PATH EMAE_CUDA_ATTENTION=tc phase bench_bf16 240 node --import=tsx bench/gpu_step.ts --batches "${BENCH_BATCHES:-64,128}" --iters 5 --warmup 2 --json "$OUT/bench_bf16.json"
  grep -E '^\|' "$OUT/bench_bf16.log" >> "$SUMMARY"
fi
if want op_profile; then
  profile_step() {  # profile_step NAME: our side only, 2 warm-up + 4 profiled steps
    phase "$1" 150 node --import=tsx bench/gpu_step.ts --batches 64 --iters 4 --warmup 2 --profile --no-pytorch --json "$OUT/$1.json"
    { echo; grep -E '^(####|steps |\|)' "$OUT/$1.log"; } >> "$SUMMARY"
  }
  profile_step op_profile
  EMAE_CUDA_GEMM=$BF16_PATH EMAE_CUDA_ATTENTION=tc profile_step op_profile_bf16
fi
if want bench_sync && [ "${SKIP_BENCH:-0}" != 1 ]; then
  EMAE_CUDA_STEP_SYNC=once phase bench_sync 240 node --import=tsx bench/gpu_step.ts --batches "${BENCH_BATCHES:-64,128}" --iters 5 --warmup 2 --json "$OUT/bench_sync.json"
  grep -E '^\|' "$OUT/bench_sync.log" >> "$SUMMARY"
fi
if want sanitizer && [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  phase memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  phase racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  EMAE_CUDA_STEP_SYNC=once phase memcheck_sync 90 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
fi
if want gemm_sanitizer && [ "${SKIP_SANITIZER:-0}" != 1 ] && [ -x .device/gemm_check ]; then
  phase gemm_memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 .device/gemm_check --quick --path "sm80$SM90"
  phase gemm_racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 .device/gemm_check --quick --path sm80
  command -v cuobjdump >/dev/null && cuobjdump --dump-sass .device/gemm_check > "$OUT/gemm_check.sass" 2>&1 &&
    status "SASS" "HGMMA in gemm_check: $(grep -c HGMMA "$OUT/gemm_check.sass") instructions"
fi
cat "$SUMMARY"
if [ "${PROFILE:-0}" = 1 ]; then  # kernel-time breakdown of two vit-base steps at batch 32
  phase profile 150 ncu --metrics gpu__time_duration.sum --print-summary per-kernel node scripts/gpu-profile.mjs vit-base 32 2
fi
