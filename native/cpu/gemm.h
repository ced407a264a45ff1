// CPU GEMM: C (M, N) = [C +] op(A) (M, K) · op(B) (K, N) [+ bias] [+ residual], row-major, fp32.
// Cache-blocked with packed B panels and a register-blocked micro-kernel chosen at run time
// (AVX-512 12×32, AVX2+FMA 6×16, portable 4×8; EMAE_GEMM_KERNEL=avx2|generic narrows the choice).
// With bf16 set, the operands are rounded to bf16 and multiplied with fp32 sums on AMX tiles
// (gemm_amx.h) or, on CPUs without AMX, with AVX512-BF16's VDPBF16PS (gemm_avx512bf16.h).
// Threads split the output into tiles, each tile owned by one thread and summed over K in a fixed
// order: results are bitwise identical for any thread count.
#pragma once
#include <cstddef>
#include <string>

namespace emae::cpu {

struct GemmParams {
  bool trans_a = false;  // A stored (K, M) instead of (M, K)
  bool trans_b = false;  // B stored (N, K) instead of (K, N)
  int M = 0, N = 0, K = 0;
  const float* A = nullptr; int lda = 0;
  const float* B = nullptr; int ldb = 0;
  float* C = nullptr; int ldc = 0;
  bool accumulate = false;          // C += … instead of C = …
  bool bf16 = false;                // operands rounded to bf16, fp32 sums (gemm_bf16_kernel_name())
  const float* bias = nullptr;      // (N) added to every row
  const float* residual = nullptr;  // (M, N) with leading dimension ldc, added
  // Called once per finished tile of C (rows [i0, i0 + rows), columns [j0, j0 + cols)), after
  // bias and residual, while the tile is still in cache: elementwise work fused into the GEMM.
  // It may read and write C's tile and the same tile of the epilogue arrays (leading dim ldc).
  void (*tile_epilogue)(const GemmParams& p, int i0, int rows, int j0, int cols) = nullptr;
  const float* epilogue_in = nullptr;
  float* epilogue_out = nullptr;
};

void gemm(const GemmParams& p);

// Name of the micro-kernel in use ("avx512", "avx2", "generic").
const char* gemm_kernel_name();

// The kernel GemmParams::bf16 runs on in this process: "amx-bf16" (Intel AMX tiles, preferred),
// "avx512-bf16" (VDPBF16PS: AMD Zen 4 and newer, Intel Cooper Lake), or nullptr when neither
// can run, with *why saying why. EMAE_BF16_KERNEL=amx-bf16|avx512-bf16 narrows the choice to
// that one (never widens it), so the tests can run the AVX512-BF16 kernel on an AMX machine.
const char* gemm_bf16_kernel_name(std::string* why = nullptr);

}  // namespace emae::cpu
