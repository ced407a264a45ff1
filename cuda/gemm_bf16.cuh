// The bf16-operand GEMM path (issue 11): both operands bf16 and K-contiguous in global memory,
// fp32 accumulation and output, the epilogue of GemmParams.
//   C (M, N) = [C +] A (M, K) · B (N, K)ᵀ [+ bias (N)] [+ residual (M, N), leading dim ldc]
// Two kernels implement it: gemm_sm80.cuh (mma.sync, cp.async multistage; sm_80 and newer) and
// gemm_sm90.cuh (wgmma fed by TMA; sm_90a only). Today's activations are fp32, so gemm_via_bf16()
// converts each operand once into a K-contiguous bf16 copy (transposing where the stored layout is
// M- or N-contiguous) and runs the chosen kernel on the copies; a later change that stores
// activations in bf16 feeds the kernels directly.
// Invariants:
//   - A and B: 16-byte aligned base, lda/ldb multiples of 8 elements (16 bytes, as TMA and cp.async
//     need), ld ≥ K; elements past K in a row are never read as data (kernels zero-fill past K);
//   - any M, N, K ≥ 0; out-of-range rows and columns are never stored;
//   - split-K: the K range is cut into `splits` pieces of k_split (a multiple of every kernel's BK);
//     each piece writes its raw sums to partial[split][M][N], and gemm_bf16_reduce (gemm.cuh's reduce) adds them
//     in split order and applies the epilogue, so the result repeats bit for bit;
//   - with splits == 1 the kernel applies the epilogue itself (store_epilogue below), once per element.
#pragma once
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"

namespace emae::cuda {

using bf16 = __nv_bfloat16;

struct GemmBf16Params {
  int M = 0, N = 0, K = 0;
  const bf16* A = nullptr; int lda = 0;  // (M, K), K contiguous
  const bf16* B = nullptr; int ldb = 0;  // (N, K), K contiguous
  float* C = nullptr; int ldc = 0;       // (M, N) fp32
  bool accumulate = false;               // C += … instead of C = …
  const float* bias = nullptr;           // (N) or null
  const float* residual = nullptr;       // (M, N) at ldc, or null
  int splits = 1;                        // K pieces; > 1 needs partial
  int k_split = 0;                       // K elements per piece (multiple of the kernel's BK); 0: all of K
  float* partial = nullptr;              // [splits][M][N] fp32 when splits > 1
};

// Which kernel runs the training step's GEMMs. kMma is the fp32-operand kernel of gemm.cuh (the
// last one verified on a device, and the default); the others go through gemm_via_bf16().
enum class GemmPath { kMma, kSm80, kSm90 };

inline const char* gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::kMma: return "mma";
    case GemmPath::kSm80: return "sm80";
    case GemmPath::kSm90: return "sm90";
  }
  return "?";
}

// The epilogue of one output element pair (col, col + 1), shared by the kernels. `split` is the K
// piece this value sums; with p.splits > 1 the raw sum goes to the partial buffer.
__device__ __forceinline__ void store_epilogue(const GemmBf16Params& p, int split, int row, int col, float v0,
                                               float v1) {
  if (row >= p.M) return;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int c = col + j;
    if (c >= p.N) return;
    float v = j == 0 ? v0 : v1;
    if (p.splits > 1) {
      p.partial[((size_t)split * p.M + row) * p.N + c] = v;
      continue;
    }
    const size_t at = (size_t)row * p.ldc + c;
    if (p.accumulate) v += p.C[at];
    if (p.bias) v += p.bias[c];
    if (p.residual) v += p.residual[at];
    p.C[at] = v;
  }
}

namespace bf16_detail {

// dst (rows, ld_dst) bf16 ← src viewed as (rows, cols): src[r·ld_src + c] (row-contiguous) or,
// transposed, src[c·ld_src + r]. Columns cols..ld_dst−1 are written as 0 so a padded row never
// carries garbage into a kernel that reads whole 16-byte chunks. 32×32 tiles through shared memory
// keep both the fp32 reads and the bf16 writes coalesced in the transposed case.
constexpr int kConvTile = 32, kConvRows = 8;  // a block is 32 × 8 threads, 4 rows each

static __global__ void __launch_bounds__(kConvTile * kConvRows) convert_bf16_kernel(
    bf16* __restrict__ dst, int ld_dst, const float* __restrict__ src, long long ld_src, int rows, int cols,
    bool transposed) {
  __shared__ float tile[kConvTile][kConvTile + 1];
  const int r0 = blockIdx.x * kConvTile, c0 = blockIdx.y * kConvTile;  // rows on x: up to 2^31 − 1 tiles
  const int tx = threadIdx.x, ty = threadIdx.y;
  if (!transposed) {
#pragma unroll
    for (int i = 0; i < kConvTile; i += kConvRows) {
      const int r = r0 + ty + i, c = c0 + tx;
      if (r < rows && c < ld_dst) dst[(size_t)r * ld_dst + c] = __float2bfloat16_rn(c < cols ? src[r * ld_src + c] : 0.f);
    }
    return;
  }
  // read src rows = dst columns (coalesced along dst rows), write dst rows
#pragma unroll
  for (int i = 0; i < kConvTile; i += kConvRows) {
    const int c = c0 + ty + i, r = r0 + tx;  // element (r, c) of the view lives at src[c·ld + r]
    tile[ty + i][tx] = (c < cols && r < rows) ? src[(size_t)c * ld_src + r] : 0.f;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kConvTile; i += kConvRows) {
    const int r = r0 + ty + i, c = c0 + tx;
    if (r < rows && c < ld_dst) dst[(size_t)r * ld_dst + c] = __float2bfloat16_rn(tile[tx][ty + i]);
  }
}

}  // namespace bf16_detail

// K-contiguous bf16 row length for K columns: a multiple of 8 elements (16 bytes).
inline int bf16_ld(int K) { return (K + 7) / 8 * 8; }

// dst (rows, bf16_ld(cols)) ← the (rows, cols) view of src, transposed when src stores it (cols, rows).
inline void convert_to_bf16(bf16* dst, const float* src, int rows, int cols, long long ld_src, bool transposed,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  using namespace bf16_detail;
  const int ld_dst = bf16_ld(cols);
  if (ceil_div(ld_dst, kConvTile) > 65535) throw std::invalid_argument("convert_to_bf16: more than 2^21 columns");
  const dim3 grid(ceil_div(rows, kConvTile), ceil_div(ld_dst, kConvTile));
  convert_bf16_kernel<<<grid, dim3(kConvTile, kConvRows), 0, stream>>>(dst, ld_dst, src, ld_src, rows, cols, transposed);
  EMAE_CHECK_LAUNCH("convert_bf16_kernel");
}

// Split-K for a kernel with tiles of bm × bn × bk on `sms` multiprocessors: pieces so that about
// two waves of tiles fill the chip, each at least 8 K-tiles deep, partials within workspace_floats.
inline void choose_splits(GemmBf16Params& p, int bm, int bn, int bk, int sms, size_t workspace_floats) {
  const long long tiles = (long long)ceil_div(p.M, bm) * ceil_div(p.N, bn);
  const int k_tiles = ceil_div(std::max(p.K, 1), bk);
  int splits = 1;
  if (tiles < sms && k_tiles >= 16) {
    splits = (int)std::min<long long>({ceil_div(2LL * sms, tiles), k_tiles / 8, 32});
    while (splits > 1 && (size_t)splits * p.M * p.N > workspace_floats) --splits;
  }
  if (splits <= 1) {
    p.splits = 1;
    p.k_split = std::max(p.K, 1);
    return;
  }
  p.k_split = ceil_div(k_tiles, splits) * bk;
  p.splits = ceil_div(p.K, p.k_split);  // no empty piece
}

inline void gemm_bf16_reduce(const GemmBf16Params& p, cudaStream_t stream) {
  const int blocks = (int)std::min<size_t>(((size_t)p.M * p.N + 255) / 256, 132 * 16);
  gemm_detail::gemm_reduce_kernel<<<blocks, 256, 0, stream>>>(p, p.splits, p.partial);  // splits 0: C = [C +] bias + residual
  EMAE_CHECK_LAUNCH("gemm_reduce_kernel");
}

// Dynamic shared memory above 48 KB needs an opt-in per kernel and device: done once per device,
// `done` (one per kernel) holding a bit per configured device.
template <class Kernel>
inline void allow_dynamic_smem(Kernel kernel, int bytes, std::atomic<unsigned long long>& done) {
  int dev = 0;
  EMAE_CUDA_CHECK(cudaGetDevice(&dev));
  const unsigned long long bit = dev < 64 ? 1ULL << dev : 0;
  if (bit && (done.load(std::memory_order_acquire) & bit)) return;
  EMAE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.fetch_or(bit, std::memory_order_release);
}

inline void check_bf16_params(const GemmBf16Params& p) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("gemm_bf16: " + what); };
  if (p.M < 0 || p.N < 0 || p.K < 0) bad("M, N, K must be >= 0");
  if (p.M > 0 && p.N > 0 && !p.C) bad("C is null");
  if (p.ldc < p.N) bad("ldc must be >= N");
  if (p.K > 0) {
    if (!p.A || !p.B) bad("A or B is null");
    if (p.lda < p.K || p.ldb < p.K) bad("lda and ldb must be >= K");
    if (p.lda % 8 || p.ldb % 8) bad("lda and ldb must be multiples of 8 (16 bytes)");
    if (reinterpret_cast<uintptr_t>(p.A) % 16 || reinterpret_cast<uintptr_t>(p.B) % 16) bad("A and B must be 16-byte aligned");
  }
  if (p.splits < 1) bad("splits must be >= 1");
  if (p.splits > 1 && !p.partial) bad("splits > 1 needs partial");
}

}  // namespace emae::cuda
