#!/usr/bin/env bash
# Our CPU GEMM (native/cpu/gemm.cc + the bf16 kernels, built standalone with g++) against PyTorch's on
# the GEMM shapes of one training step, in the same run, 2 threads each; prints both and the ratio.
#   bash bench/gemm_shapes.sh [preset=cpu-tiny] [parts=4] [batch=32] [reps=10] [matmul=fp32|bf16]
# bf16: ours with GemmParams::bf16 (AMX or AVX512-BF16), PyTorch's under bf16 autocast.
#   bash bench/gemm_shapes.sh --build-only   # CI: build ours and run it on a few shapes (no Python)
# Needs g++ with OpenMP and a python with torch (.venv/bin/python if present).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/emae-gemm.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
g++ -std=c++17 -O3 -fopenmp -fno-math-errno -fno-trapping-math -Inative \
  bench/gemm_shapes.cc native/cpu/gemm.cc native/cpu/gemm_amx.cc native/cpu/gemm_avx512bf16.cc -o "$tmp/gemm_shapes"

if [ "${1:-}" = "--build-only" ]; then
  # qkv of cpu-tiny at 2 images × 4 parts × 17 tokens (forward NT, dinp NN, weight gradient TN)
  # and decoder_pred's narrow N over 8 × 65 tokens.
  printf '%s\n' '136 576 192 0 1 1' '136 192 576 0 0 1' '576 192 136 1 0 1' '520 48 128 0 1 1' > "$tmp/shapes"
  OMP_NUM_THREADS=2 "$tmp/gemm_shapes" 2 < "$tmp/shapes" | tee "$tmp/ours"
  [ "$(grep -c 'GFLOP/s' "$tmp/ours")" = 5 ] || { echo "gemm_shapes: expected 4 shapes and a TOTAL line" >&2; exit 1; }
  exit 0
fi

preset=${1:-cpu-tiny} parts=${2:-4} batch=${3:-32} reps=${4:-10} matmul=${5:-fp32}
case "$matmul" in fp32) ;; bf16) export EMAE_BENCH_BF16=1 ;; *) echo "matmul must be fp32 or bf16" >&2; exit 1 ;; esac
py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
python3 bench/gemm_shapes.py "$preset" "$parts" "$batch" > "$tmp/shapes"
OMP_NUM_THREADS=2 "$tmp/gemm_shapes" "$reps" < "$tmp/shapes" > "$tmp/ours"
"$py" bench/torch_gemm_shapes.py "$reps" 2 "$matmul" < "$tmp/shapes" > "$tmp/torch"
echo "$preset K=$parts batch $batch, $matmul: ours | PyTorch (ms, best of $reps), ratio ours/PyTorch"
paste "$tmp/ours" "$tmp/torch" | awk '$1 != "TOTAL" { printf "%6s %5s %5s %s %-4s %8s | %8s  %.2f\n", $1, $2, $3, $4, $5, $6, $15, $6 / $15 }'
grep TOTAL "$tmp/ours"; grep TOTAL "$tmp/torch"
