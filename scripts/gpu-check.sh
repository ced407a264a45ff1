#!/usr/bin/env bash
# One GPU run, end to end (see ../shared/DEVICE.md): unpack .device/, report the device, then the
# phases named in PHASES, in priority order, each inside what is left of a time budget, so that a
# run always ends (and its logs come back) inside the device tool's 600 s per command. Logs, a
# summary and JSON results go to $OUT.
# Prepare here: EMAE_CUDA_ARCHITECTURES="80;90;90a" npm run build:native && node scripts/build-ts.mjs
#   && bash scripts/device-pack.sh; then on the device: bash scripts/gpu-check.sh with carry
#   [.device, dist]. A session has 15 min of device time in all (a start costs 1–2 min): plan two
#   runs, `PHASES=first` then `PHASES=second` (or a rerun of what failed).
# Environment:
#   PHASES     a comma list of phases, or a preset: first (what must be verified before any new
#              path can become the default, and the step's speed on it), second (against cuBLAS
#              and torch.compile, the sanitizers, the other configurations); default: first,second.
#   BUDGET_S   seconds this run may take (default 540); a phase starts only with MIN_PHASE_S (20)
#              left and is cut at the budget; the summary lists what was skipped.
#   BENCH_BATCHES (default 64,128), BENCH_COMPILE=0 (no torch.compile), SKIP_BENCH=1,
#   SKIP_SANITIZER=1, SKIP_DIST=1, PROFILE=1 (the ncu kernel breakdown, after everything).
#   DRY_RUN=1  print each phase's environment and command instead of running it, on any machine
#              (nothing unpacked; the device is assumed to be a Hopper card): test/gpu-check.test.ts
# Phases:
#   smoke          3 training steps, encode and reconstruct against the CPU (default paths)
#   gemm           cuda/dev/gemm_check on every GEMM path the device runs (mma, sm80, sm90), fused
#                  epilogues included, against a double reference (issue 11)
#   kernels        cuda/dev/attention_check (simt and tensor-core attention), classifier_check,
#                  elementwise_bf16_check (LayerNorm, GELU, AdamW, token kernels: bf16 vs fp32 storage)
#   parity         the CUDA tests (cuda, cuda-parity, profile) on the default paths
#   parity_bf16    the same with the bf16 GEMM path (sm90 on Hopper, else sm80), tensor-core
#                  attention and EMAE_CUDA_STEP_SYNC=once: everything a new default would change
#   parity_act     bf16 activations (EMAE_ACTIVATIONS=bf16, issue 11 Deliver 1) on the bf16 paths:
#                  cuda-parity (its model-level tests then run on bf16 storage) and cuda-bf16
#   bench_act      bench_bf16 with bf16 activations: step time and peak memory (same JSON)
#   parity_sync    the CUDA tests with EMAE_CUDA_STEP_SYNC=once alone (issue 12's one host sync;
#                  cuda.test.ts also checks it against the host flow bit for bit): to tell apart
#                  what failed in parity_bf16
#   bench_bf16     the vit-base K=4 step on the bf16 paths against PyTorch eager at BENCH_BATCHES
#                  → $OUT/gpu-step-<card>-<date>.json (issue 12's record, one object per row)
#   op_profile     per-op device time and the gaps (EMAE_PROFILE=1) on the default and bf16 paths
#   gemm_shapes    each GEMM of the vit-base step, ours (every path) against cuBLAS
#                  → $OUT/gpu-gemm-<card>-<date>.json
#   bench_compile  bench_bf16 again, with torch.compile of the same model beside eager (same JSON)
#   bench          the step on the default paths against PyTorch eager (same JSON)
#   bench_mae      MAE (K = 1) at batch 256 on the bf16 paths against eager and torch.compile
#   bench_sync     the step with EMAE_CUDA_STEP_SYNC=once alone (on request only)
#   sanitizer      compute-sanitizer memcheck/racecheck on the smoke step, default and bf16 paths
#   gemm_sanitizer memcheck/racecheck on gemm_check --quick; HGMMA count in the SASS
#   dist           one process over a one-rank NCCL communicator (PyTorch's NCCL wheel), two ranks
#                  on the one GPU through host-staged MPI (where the image has mpirun), and the
#                  all-reduce time of vit-base's gradient on each (issue 13)
set -uo pipefail
OUT=${OUT:-/tmp/emae-gpu-out}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
echo "# emae GPU check $(date -u +%FT%TZ)" > "$SUMMARY"
status() { echo "- $1: $2" | tee -a "$SUMMARY"; }

FIRST=smoke,gemm,kernels,parity,parity_bf16,bench_bf16,op_profile
SECOND=parity_act,bench_act,parity_sync,gemm_shapes,bench_compile,bench,bench_mae,sanitizer,gemm_sanitizer,dist
PHASES=${PHASES:-first,second}
PHASES=,${PHASES//first/$FIRST},
PHASES=${PHASES//second/$SECOND}
KNOWN=,$FIRST,$SECOND,bench_sync,
for name in ${PHASES//,/ }; do
  [[ $KNOWN == *,$name,* ]] || { echo "gpu-check: unknown phase '$name' (known: ${KNOWN:1:-1}, or first, second)" >&2; exit 2; }
done
want() { [[ $PHASES == *,$1,* ]]; }
DRY=${DRY_RUN:-0}
if [ "$DRY" != 1 ]; then
  xz -d < .device/node.xz > /usr/local/bin/node && chmod +x /usr/local/bin/node
  tar -xJf .device/node_modules.tar.xz
  for f in .device/*.xz; do  # the addon and the kernel checks, packed by device-pack.sh
    case $f in .device/node.xz|.device/node_modules.tar.xz) ;; *) xz -dc "$f" > "${f%.xz}" && chmod +x "${f%.xz}" ;; esac
  done
  export LD_LIBRARY_PATH="$PWD/.device${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export EMAE_NATIVE_PATH="$PWD/.device/emae.node"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee -a "$SUMMARY"
  node -e "import('./dist/index.js').then(m => console.log(JSON.stringify(m.cudaInfo())))" | tee -a "$SUMMARY"
  # what the image offers for issue 13's multi-rank checks (two ranks host-staged on one GPU need an
  # MPI whose libmpi our Open MPI 4 plugin, .device/emae_mpi.so, can load)
  status "MPI on the device" "mpirun: $(command -v mpirun || echo none); $(mpirun --version 2>/dev/null | head -1); mpi4py: $(python3 -c 'import mpi4py; print(mpi4py.__version__, mpi4py.get_config())' 2>&1 | tail -1 | cut -c1-160); libmpi: $(ldconfig -p 2>/dev/null | grep -o 'libmpi\.so[.0-9]*' | sort -u | tr '\n' ' ')"
fi

BUDGET_S=${BUDGET_S:-540}
MIN_PHASE_S=${MIN_PHASE_S:-20}
SKIPPED=""
phase() {  # phase NAME TIMEOUT_S COMMAND...: at most TIMEOUT_S, and never past the budget
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET_S - SECONDS))
  if [ "$left" -lt "$MIN_PHASE_S" ]; then
    SKIPPED="$SKIPPED $name"
    status "$name" "skipped: ${left} s of the ${BUDGET_S} s budget left"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$DRY" = 1 ]; then
    status "$name" "limit ${limit} s: $(env | grep -E '^EMAE_(CUDA_GEMM|CUDA_ATTENTION|CUDA_STEP_SYNC|ACTIVATIONS)=' | sort | tr '\n' ' ')$*"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  status "$name" "rc=$rc in $((SECONDS - t0)) s$([ $rc = 124 ] && echo " (cut at ${limit} s)"): $(grep -E 'passed|failed|ERROR SUMMARY|Error|error' "$OUT/$name.log" | tail -2 | tr '\n' ' ' | cut -c1-200)"
}

have() { [ "$DRY" = 1 ] || [ -x ".device/$1" ]; }  # a standalone check built by device-pack.sh
# the bf16 GEMM path this card runs best: sm90 (wgmma) where the addon's sm_90a code loads
BF16_PATH=$([ "$DRY" = 1 ] && echo sm90 || EMAE_CUDA_GEMM=sm90 node -e "import('./dist/index.js').then(m => console.log(m.cudaInfo().devices[0]?.gemmPath ?? 'none'))")
[ "$BF16_PATH" = sm90 ] || BF16_PATH=sm80
SM90=$([ "$BF16_PATH" = sm90 ] && echo ,sm90)  # appended to path lists
status "bf16 GEMM path" "$BF16_PATH"
# the new paths together: what a new default would change (issue 11 and 12)
bf16_on() { export EMAE_CUDA_GEMM=$BF16_PATH EMAE_CUDA_ATTENTION=tc EMAE_CUDA_STEP_SYNC=once; }
bf16_off() { unset EMAE_CUDA_GEMM EMAE_CUDA_ATTENTION EMAE_CUDA_STEP_SYNC EMAE_ACTIVATIONS; }
act_on() { bf16_on; export EMAE_ACTIVATIONS=bf16; }  # and bf16 storage of the activations
CARD=$([ "$DRY" = 1 ] && echo dry-run || nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//' | tr A-Z a-z)
DAY=$(date -u +%F)
[ -f .device/commit ] && export EMAE_COMMIT=$(cat .device/commit)  # written by device-pack.sh
AVA=(node node_modules/ava/entrypoints/cli.mjs --verbose --timeout=3m)
CUDA_TESTS=(test/cuda.test.ts test/cuda-parity.test.ts test/cuda-bf16.test.ts test/profile.test.ts)
STEP_JSON="$OUT/gpu-step-$CARD-$DAY.json"
COMPILE=$([ "${BENCH_COMPILE:-1}" = 1 ] && echo --compile)  # for the phases that ask for it
bench_step() {  # bench_step NAME TIMEOUT_S [gpu_step.ts options]: the step against PyTorch, results appended
  local name=$1 limit=$2; shift 2
  phase "$name" "$limit" node --import=tsx bench/gpu_step.ts --iters 5 --warmup 2 --json "$OUT/$name.json" --results "$STEP_JSON" "$@"
  grep -E '^\|' "$OUT/$name.log" >> "$SUMMARY" 2>/dev/null
}

want smoke && phase smoke 60 node scripts/gpu-smoke.mjs 3
if want gemm && have gemm_check; then
  phase gemm 200 .device/gemm_check
  grep -E '^path |^PASS|^FAIL' "$OUT/gemm.log" 2>/dev/null | tail -12 >> "$SUMMARY"
fi
# kernel checks from cuda/dev, built by scripts/device-pack.sh (sm_90, sm_90a)
if want kernels; then
  have attention_check && phase attention_check 90 .device/attention_check  # simt and tc paths
  grep -E '^\|' "$OUT/attention_check.log" >> "$SUMMARY" 2>/dev/null
  have classifier_check && phase classifier_check 45 .device/classifier_check
  have elementwise_bf16_check && phase elementwise_bf16_check 45 .device/elementwise_bf16_check  # bf16 vs fp32 storage
fi
want parity && phase parity 180 "${AVA[@]}" "${CUDA_TESTS[@]}"
if want parity_bf16; then
  bf16_on; phase parity_bf16 180 "${AVA[@]}" "${CUDA_TESTS[@]}"; bf16_off
fi
if want parity_act; then
  act_on; phase parity_act 200 "${AVA[@]}" test/cuda-parity.test.ts test/cuda-bf16.test.ts; bf16_off
fi
if want bench_act && [ "${SKIP_BENCH:-0}" != 1 ]; then
  act_on; bench_step bench_act 200 --batches "${BENCH_BATCHES:-64,128}"; bf16_off
fi
want parity_sync && EMAE_CUDA_STEP_SYNC=once phase parity_sync 180 "${AVA[@]}" "${CUDA_TESTS[@]}"
if want bench_bf16 && [ "${SKIP_BENCH:-0}" != 1 ]; then
  bf16_on; bench_step bench_bf16 200 --batches "${BENCH_BATCHES:-64,128}"
  bf16_off
fi
if want op_profile; then
  profile_step() {  # profile_step NAME: our side only, 2 warm-up + 4 profiled steps
    phase "$1" 90 node --import=tsx bench/gpu_step.ts --batches 64 --iters 4 --warmup 2 --profile --no-pytorch --json "$OUT/$1.json"
    { echo; grep -E '^(####|steps |\|)' "$OUT/$1.log"; } >> "$SUMMARY" 2>/dev/null
  }
  profile_step op_profile
  bf16_on; profile_step op_profile_bf16
  bf16_off
fi
if want gemm_shapes && have gemm_check; then
  [ "$DRY" = 1 ] || python3 bench/gemm_shapes.py vit-base 4 64 > "$OUT/shapes.txt"
  phase gemm_shapes_ours 120 .device/gemm_check --shapes "$OUT/shapes.txt" --path "mma,sm80$SM90" --reps 20
  phase gemm_shapes 90 python3 bench/gpu_gemm_vs_cublas.py "$OUT/shapes.txt" "$OUT/gemm_shapes_ours.log" "$OUT/gpu-gemm-$CARD-$DAY.json"
  tail -2 "$OUT/gemm_shapes.log" >> "$SUMMARY" 2>/dev/null
fi
if want bench_compile && [ "${SKIP_BENCH:-0}" != 1 ]; then
  bf16_on; bench_step bench_compile 300 --batches "${BENCH_BATCHES:-64,128}" $COMPILE
  bf16_off
fi
want bench && [ "${SKIP_BENCH:-0}" != 1 ] && bench_step bench 150 --batches "${BENCH_BATCHES:-64,128}"
if want bench_mae && [ "${SKIP_BENCH:-0}" != 1 ]; then
  bf16_on; bench_step bench_mae 200 --parts 1 --batches 256 $COMPILE
  bf16_off
fi
want bench_sync && [ "${SKIP_BENCH:-0}" != 1 ] && EMAE_CUDA_STEP_SYNC=once bench_step bench_sync 200 --batches "${BENCH_BATCHES:-64,128}"
if want sanitizer && [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  phase memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  phase racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  bf16_on
  phase memcheck_bf16 90 compute-sanitizer --tool memcheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  phase racecheck_bf16 120 compute-sanitizer --tool racecheck --error-exitcode 9 node scripts/gpu-smoke.mjs 1
  bf16_off
fi
if want gemm_sanitizer && [ "${SKIP_SANITIZER:-0}" != 1 ] && have gemm_check; then
  phase gemm_memcheck 120 compute-sanitizer --tool memcheck --error-exitcode 9 .device/gemm_check --quick --path "sm80$SM90"
  phase gemm_racecheck 120 compute-sanitizer --tool racecheck --error-exitcode 9 .device/gemm_check --quick --path sm80
  [ "$DRY" != 1 ] && command -v cuobjdump >/dev/null && cuobjdump --dump-sass .device/gemm_check > "$OUT/gemm_check.sass" 2>&1 &&
    status "SASS" "HGMMA in gemm_check: $(grep -c HGMMA "$OUT/gemm_check.sass") instructions"
fi
# data parallelism on one GPU: one process over a one-rank NCCL communicator (PyTorch's NCCL wheel)
if want dist && [ "${SKIP_DIST:-0}" != 1 ]; then
  nccl_dir=$(python3 -c "import nvidia.nccl as m; print(list(m.__path__)[0])" 2>/dev/null)
  export EMAE_NCCL_LIBRARY=${EMAE_NCCL_LIBRARY:-$nccl_dir/lib/libnccl.so.2}
  phase dist_nccl 120 "${AVA[@]}" test/distributed.test.ts --match 'one process*'
  # all-reduce of vit-base's gradient (the cost a step adds per rank): NCCL over one rank here
  phase allreduce_nccl 60 node --import=tsx bench/allreduce.ts --device cuda --collectives nccl --iters 20
  # two ranks sharing the GPU through the host-staged MPI path (NCCL refuses two ranks on one
  # device before 2.30): the equivalence test, then the all-reduce; they need an mpirun that our
  # Open MPI plugin works with, and the test says why it skipped otherwise
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  phase dist_two_ranks 150 "${AVA[@]}" test/distributed.test.ts --match '2 ranks on one GPU*'
  if [ "$DRY" = 1 ] || command -v mpirun >/dev/null; then
    phase allreduce_mpi 60 mpirun -np 2 --oversubscribe --bind-to none node --import=tsx bench/allreduce.ts --device cuda --collectives mpi --iters 10
  fi
  grep -hE '^\{"preset"' "$OUT"/allreduce_*.log >> "$SUMMARY" 2>/dev/null
fi
if [ "${PROFILE:-0}" = 1 ]; then  # kernel-time breakdown of two vit-base steps at batch 32
  phase profile 150 ncu --metrics gpu__time_duration.sum --print-summary per-kernel node scripts/gpu-profile.mjs vit-base 32 2
fi
[ -n "$SKIPPED" ] && status "skipped for the budget" "$SKIPPED (rerun with PHASES=...)"
status "total" "$SECONDS s of the ${BUDGET_S} s budget"
cat "$SUMMARY"
