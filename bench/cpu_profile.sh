#!/usr/bin/env bash
# Where a CPU training step spends its time: `perf record` on the benchmark's child process
# (bench/cpu_step.ts --child: one preset and mode, 2 threads, 1 warm-up + N timed steps), the
# samples grouped by op. Needs Linux perf (perf_event_paranoid <= 2 is enough for user code).
#   bash bench/cpu_profile.sh [preset=cpu-tiny] [parts=4] [batch=32] [steps=8] [matmul=fp32|bf16]
# Model start-up (node, tsx, the addon, parameter init) is in the samples too, as "other".
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-cpu-tiny} parts=${2:-4} batch=${3:-32} steps=${4:-8} matmul=${5:-fp32}
data=$(mktemp /tmp/emae-perf.XXXXXX)
trap 'rm -f "$data"' EXIT
perf record -q -F 1000 -o "$data" -- node --import=tsx bench/cpu_step.ts --child --preset "$preset" \
  --parts "$parts" --batch "$batch" --threads 2 --iters "$steps" --warmup 1 --matmul "$matmul" > /dev/null 2>&1
perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null | awk -v title="$preset K=$parts batch $batch, $matmul matmuls" '
  /^ +[0-9.]+%/ {
    pct = $1; sub("%", "", pct); sym = $0
    if (sym ~ /micro_avx512|micro_avx2|micro_generic/) g = "GEMM micro-kernels"
    else if (sym ~ /micro_amx|configure_tiles/) g = "GEMM AMX tiles (bf16)"
    else if (sym ~ /pack_a_rows|pack_b_block|gemm_amx/) g = "GEMM bf16 packing (AMX path)"
    else if (sym ~ /micro_bf16/) g = "GEMM AVX512-BF16 micro-kernel"
    else if (sym ~ /pack_sliver|gemm_avx512_bf16/) g = "GEMM bf16 packing, prefetch (AVX512-BF16 path)"
    else if (sym ~ /pack_b_sliver|pack_a_sliver|transpose16x16|run_tiles|cpu::gemm/) g = "GEMM packing, edges, prefetch"
    else if (sym ~ /attention/) g = "attention (forward + backward)"
    else if (sym ~ /gelu/) g = "GELU (fused into the fc1 / fc2 GEMM tiles)"
    else if (sym ~ /layernorm/) g = "LayerNorm"
    else if (sym ~ /column_sum/) g = "bias gradients (column sums)"
    else if (sym ~ /adamw/) g = "AdamW"
    else if (sym ~ /sum_squares|grad_norm|scale_piece/) g = "gradient norm"
    else if (sym ~ /memset/) g = "zeroing gradients (memset)"
    else if (sym ~ /loss_forward|patchify|gather_visible|tokens_/) g = "loss, patches, tokens"
    else if (sym ~ /0x0000000000/) g = "OpenMP runtime (barriers, waits)"
    else if (sym ~ /\[k\]/) g = "kernel (page faults, scheduling)"
    else g = "other (node, V8, start-up)"
    share[g] += pct
  }
  END {
    printf "| %s: share of samples | %% |\n|---|---|\n", title
    n = 0; for (g in share) order[++n] = g
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (share[order[j]] > share[order[i]]) { t = order[i]; order[i] = order[j]; order[j] = t }
    for (i = 1; i <= n; i++) printf "| %s | %.1f |\n", order[i], share[order[i]]
  }'
