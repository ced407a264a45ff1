// The bf16-operand GEMM path (issue 11): both operands bf16 in global memory, K-contiguous or (on
// the sm80 kernel) M- or N-contiguous (a_mn_major, b_mn_major), fp32 accumulation, the epilogue of
// GemmParams (epilogue_store in gemm.cuh) in fp32, C and the GELU buffers stored fp32 or bf16
// (rounded once, at the store).
//   C (M, N) = [C +] A (M, K) · B (N, K)ᵀ [+ bias (N)] [+ residual (M, N), leading dim ldc]
//              [· gelu'(gelu_inp (M, N))];  gelu_out (M, N) = gelu(C) when asked
// Two kernels implement it: gemm_sm80.cuh (mma.sync, cp.async multistage; sm_80 and newer) and
// gemm_sm90.cuh (wgmma fed by TMA; sm_90a only). gemm_via_bf16() (gemm_dispatch.cuh) hands an
// operand that is already bf16 and 16-byte aligned with an ld of whole 16 bytes to the kernels as it
// is, stored K-contiguous or M- or N-contiguous (a_mn_major / b_mn_major: sm80 reads those with
// ldmatrix.trans, sm90 with wgmma's transposed operands); any other (fp32, misaligned) is copied once
// into a K-contiguous bf16 operand (converting, transposing where needed) by the conversion kernels
// below.
// Invariants:
//   - A and B: 16-byte aligned base, lda/ldb multiples of 8 elements (16 bytes, as TMA and cp.async
//     need), ld ≥ the stored row length (K, or M / N when MN-major); elements past it in a row are
//     never read as data (kernels zero-fill past K, M and N);
//   - any M, N, K ≥ 0; out-of-range rows and columns are never stored;
//   - split-K: the K range is cut into `splits` pieces of k_split (a multiple of every kernel's BK);
//     each piece writes its raw sums to partial[split][M][N], and gemm_bf16_reduce (gemm.cuh's reduce) adds them
//     in split order and applies the epilogue, so the result repeats bit for bit;
//   - with splits == 1 the kernel applies the epilogue itself (store_epilogue below), once per element;
//   - the fp32 → bf16 conversion of a dweight GEMM's A (dout, stored (K, M)) can add the row sums of
//     the view (the bias gradient) on the way: each block sums its rows over one 256-column chunk in
//     column order and the chunks are added in order, the very sequence of column_sum_accumulate, so
//     the sums equal the separate pass's bit for bit while dout is read once less.
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
  const bf16* A = nullptr; int lda = 0;  // (M, K), K contiguous; a_mn_major: stored (K, M), M contiguous
  const bf16* B = nullptr; int ldb = 0;  // (N, K), K contiguous; b_mn_major: stored (K, N), N contiguous
  bool a_mn_major = false;               // lda ≥ M then (the leading dimension over K rows)
  bool b_mn_major = false;               // ldb ≥ N then
  Act C; int ldc = 0;                    // (M, N) fp32, or bf16 (not with accumulate or residual)
  bool accumulate = false;               // C += … instead of C = … (fp32 C)
  const float* bias = nullptr;           // (N) or null
  const float* residual = nullptr;       // (M, N) at ldc, or null (fp32, and so is C)
  Act gelu_out;                          // (M, N) at ldc, or null: gelu(C's new value); fp32 or bf16
  ActIn gelu_inp;                        // (M, N) at ldc, or null: C's new value · gelu'(gelu_inp); fp32 or bf16
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

using gemm_detail::ViewType;

// The store of one output element pair (col, col + 1), shared by the kernels. `split` is the K
// piece this value sums; with p.splits > 1 the raw sum goes to the partial buffer (the reduce
// applies the epilogue), else epilogue_store_as<kGelu, kC, kG>. kC, kG: the types of C and of the
// GELU view as the kernel's instantiation fixes them (Epilogue, with_epilogue), or kAny: read from
// the views. Host-callable for the CPU emulations.
template <bool kGelu, ViewType kC = ViewType::kAny, ViewType kG = ViewType::kAny>
__host__ __device__ __forceinline__ void store_epilogue(const GemmBf16Params& p, int split, int row, int col, float v0,
                                                        float v1) {
  if (row >= p.M) return;
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int c = col + j;
    if (c >= p.N) return;
    const float v = j == 0 ? v0 : v1;
    if (p.splits > 1) p.partial[((size_t)split * p.M + row) * p.N + c] = v;
    else epilogue_store_as<kGelu, kC, kG>(p, row, c, v);
  }
}

// Whether a tile kernel runs its GELU instantiation for p: when p asks for a GELU and stores final
// values (one split); split partials are raw sums and the reduce applies the GELU. The launchers
// and the CPU emulations choose with this.
__host__ __device__ __forceinline__ bool gelu_instantiation(const GemmBf16Params& p) {
  return gelu_epilogue(p) && p.splits == 1;
}

// One epilogue instantiation of a tile kernel: GELU or not, the type of C, and of the GELU view
// (gelu_out or gelu_inp; kF32 when there is none). A template parameter rather than a run-time
// read of the views' types: the branch at every unrolled store site cost registers.
template <bool kGelu_, ViewType kC_, ViewType kG_>
struct Epilogue {
  static constexpr bool kGelu = kGelu_;
  static constexpr ViewType kC = kC_, kG = kG_;
  __host__ __device__ __forceinline__ static void store(const GemmBf16Params& p, int split, int row, int col,
                                                        float v0, float v1) {
    store_epilogue<kGelu, kC, kG>(p, split, row, col, v0, v1);
  }
};

// Calls f(Epilogue<…>{}) with p's instantiation: gelu_instantiation(p) and the views' types (split
// partials are fp32 whatever C is, so a split GEMM runs the fp32 instantiation). The launchers and
// the CPU emulations choose with this.
template <class F>
inline void with_epilogue(const GemmBf16Params& p, F&& f) {
  constexpr ViewType F32 = ViewType::kF32, BF16 = ViewType::kBF16;
  const bool c16 = p.splits == 1 && p.C.is_bf16();
  if (!gelu_instantiation(p)) {
    if (c16) f(Epilogue<false, BF16, F32>{});
    else f(Epilogue<false, F32, F32>{});
    return;
  }
  const bool g16 = (p.gelu_out.data ? p.gelu_out.dtype : p.gelu_inp.dtype) == DType::kBF16;
  if (c16 && g16) f(Epilogue<true, BF16, BF16>{});
  else if (c16) f(Epilogue<true, BF16, F32>{});
  else if (g16) f(Epilogue<true, F32, BF16>{});
  else f(Epilogue<true, F32, F32>{});
}

namespace bf16_detail {

// dst (rows, ld_dst) bf16 ← src viewed as (rows, cols): src[r·ld_src + c] (row-contiguous) or,
// transposed, src[c·ld_src + r]; src fp32 (rounded to nearest even) or bf16 (copied exactly: it
// is staged widened to fp32, and rounding that back is the identity). Columns cols..ld_dst−1 are
// written as 0 so a padded row never carries garbage into a kernel that reads whole 16-byte chunks.
// 32×32 tiles through shared memory keep both the reads and the bf16 writes coalesced in the
// transposed case.
constexpr int kConvTile = 32, kConvRows = 8;  // a block is 32 × 8 threads, 4 rows each
constexpr int kSumChunk = kColumnSumRowChunk;  // view columns per row-sum partial (column_sum_accumulate's chunk)
static_assert(kSumChunk % kConvTile == 0, "a sum chunk is whole tiles");
static_assert(kSumChunk % 8 == 0, "chunks of the K columns and of bf16_ld(K) columns coincide");

template <class Src>                   // float or bf16
struct ConvArgs {
  bf16* dst; int ld_dst;                 // (rows, ld_dst) bf16
  const Src* src; long long ld_src;      // the view (rows, cols), stored (rows, ·) or, transposed, (cols, ·)
  int rows, cols;
};
using gemm_detail::widen;
using ConvTile = float[kConvTile][kConvTile + 1];

// The transposed tile at view (r0, c0) in two steps with a barrier between them; each is one
// thread's (tx < 32, ty < 8) part, host-callable so the CPU emulations run them thread by thread.
// Step 1: read src rows = view columns (coalesced along view rows) into tile[view col − c0][view row − r0].
template <class Src>
__host__ __device__ __forceinline__ void stage_transposed(ConvTile& tile, const ConvArgs<Src>& a, int r0, int c0,
                                                          int tx, int ty) {
#pragma unroll
  for (int i = 0; i < kConvTile; i += kConvRows) {
    const int c = c0 + ty + i, r = r0 + tx;  // element (r, c) of the view lives at src[c·ld + r]
    tile[ty + i][tx] = (c < a.cols && r < a.rows) ? widen(a.src[(size_t)c * a.ld_src + r]) : 0.f;
  }
}
// Step 2: write dst rows (coalesced) from the staged tile.
template <class Src>
__host__ __device__ __forceinline__ void write_transposed(const ConvTile& tile, const ConvArgs<Src>& a, int r0, int c0,
                                                          int tx, int ty) {
#pragma unroll
  for (int i = 0; i < kConvTile; i += kConvRows) {
    const int r = r0 + ty + i, c = c0 + tx;
    if (r < a.rows && c < a.ld_dst) a.dst[(size_t)r * a.ld_dst + c] = __float2bfloat16_rn(tile[tx][ty + i]);
  }
}
// After step 2, threads ty == 0: view row r0 + tx's running sum over the tile's 32 columns in
// column order (columns past cols are staged as 0 and leave the sum unchanged).
__host__ __device__ __forceinline__ void sum_transposed(const ConvTile& tile, int tx, float& sum) {
#pragma unroll
  for (int j = 0; j < kConvTile; ++j) sum += tile[j][tx];
}

// The kernels' bodies are written over a Block policy (block_x/y, thread_x/y, sync) so that the CPU
// emulations (cuda/dev/bf16_convert_emulate.h) run this code; DeviceBlock is the GPU's.
struct DeviceBlock {
  __device__ __forceinline__ int block_x() const { return blockIdx.x; }
  __device__ __forceinline__ int block_y() const { return blockIdx.y; }
  __device__ __forceinline__ int thread_x() const { return threadIdx.x; }
  __device__ __forceinline__ int thread_y() const { return threadIdx.y; }
  __device__ __forceinline__ void sync() const { __syncthreads(); }
};

// Block (x, y) converts the view's 32 × 32 tile (32x, 32y).
#pragma nv_exec_check_disable
template <class Block, class Src>
__host__ __device__ __forceinline__ void convert_block(ConvTile& tile, const ConvArgs<Src>& a, bool transposed,
                                                       const Block& b) {
  const int r0 = b.block_x() * kConvTile, c0 = b.block_y() * kConvTile;  // rows on x: up to 2^31 − 1 tiles
  const int tx = b.thread_x(), ty = b.thread_y();
  if (!transposed) {
#pragma unroll
    for (int i = 0; i < kConvTile; i += kConvRows) {
      const int r = r0 + ty + i, c = c0 + tx;
      if (r < a.rows && c < a.ld_dst)
        a.dst[(size_t)r * a.ld_dst + c] = __float2bfloat16_rn(c < a.cols ? widen(a.src[r * a.ld_src + c]) : 0.f);
    }
    return;
  }
  stage_transposed(tile, a, r0, c0, tx, ty);
  b.sync();
  write_transposed(tile, a, r0, c0, tx, ty);
}

// The transposed conversion plus row sums of the view: block (x, y) converts view rows
// [32x, 32x + 32) × columns [kSumChunk·y, kSumChunk·(y + 1)) tile by tile and writes
// partial[y][r] = Σ of row r over the chunk's columns (widened to fp32), added in column order.
#pragma nv_exec_check_disable
template <class Block, class Src>
__host__ __device__ __forceinline__ void convert_row_sums_block(ConvTile& tile, const ConvArgs<Src>& a,
                                                                float* __restrict__ partial, const Block& b) {
  const int r0 = b.block_x() * kConvTile, c_begin = b.block_y() * kSumChunk;
  const int c_end = c_begin + kSumChunk < a.ld_dst ? c_begin + kSumChunk : a.ld_dst;
  const int tx = b.thread_x(), ty = b.thread_y();
  float sum = 0.f;
  for (int c0 = c_begin; c0 < c_end; c0 += kConvTile) {
    stage_transposed(tile, a, r0, c0, tx, ty);
    b.sync();
    write_transposed(tile, a, r0, c0, tx, ty);
    if (ty == 0) sum_transposed(tile, tx, sum);
    b.sync();  // the next tile overwrites this one
  }
  if (ty == 0 && r0 + tx < a.rows) partial[(size_t)b.block_y() * a.rows + r0 + tx] = sum;
}

template <class Src>
__global__ void __launch_bounds__(kConvTile * kConvRows) convert_bf16_kernel(
    bf16* __restrict__ dst, int ld_dst, const Src* __restrict__ src, long long ld_src, int rows, int cols,
    bool transposed) {
  __shared__ ConvTile tile;
  convert_block(tile, ConvArgs<Src>{dst, ld_dst, src, ld_src, rows, cols}, transposed, DeviceBlock{});
}

template <class Src>
__global__ void __launch_bounds__(kConvTile * kConvRows) convert_bf16_row_sums_kernel(
    bf16* __restrict__ dst, int ld_dst, const Src* __restrict__ src, long long ld_src, int rows, int cols,
    float* __restrict__ partial) {
  __shared__ ConvTile tile;
  convert_row_sums_block(tile, ConvArgs<Src>{dst, ld_dst, src, ld_src, rows, cols}, partial, DeviceBlock{});
}

}  // namespace bf16_detail

// K-contiguous bf16 row length for K columns: a multiple of 8 elements (16 bytes).
inline int bf16_ld(int K) { return (K + 7) / 8 * 8; }

// dst (rows, bf16_ld(cols)) ← the (rows, cols) view of src, transposed when src stores it (cols, rows).
// Src: float (rounded) or bf16 (copied).
template <class Src>
inline void convert_to_bf16(bf16* dst, const Src* src, int rows, int cols, long long ld_src, bool transposed,
                            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  using namespace bf16_detail;
  const int ld_dst = bf16_ld(cols);
  if (ceil_div(ld_dst, kConvTile) > 65535) throw std::invalid_argument("convert_to_bf16: more than 2^21 columns");
  const dim3 grid(ceil_div(rows, kConvTile), ceil_div(ld_dst, kConvTile));
  convert_bf16_kernel<Src><<<grid, dim3(kConvTile, kConvRows), 0, stream>>>(dst, ld_dst, src, ld_src, rows, cols, transposed);
  EMAE_CHECK_LAUNCH("convert_bf16_kernel");
}

// The transposed convert_to_bf16 (src stores the view (cols, rows)) that also adds the view's row
// sums to row_sums (rows): row_sums[r] += Σ_c src[c·ld_src + r], bit for bit what
// column_sum_accumulate(row_sums, src, cols, rows, ld_src, …) adds (a bf16 src: what it adds for an
// fp32 array holding src's values). scratch: column_sum_scratch_floats(cols, rows) floats for the
// per-chunk partials.
template <class Src>
inline void convert_to_bf16_with_row_sums(bf16* dst, float* row_sums, const Src* src, int rows, int cols,
                                          long long ld_src, float* scratch, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  using namespace bf16_detail;
  const int ld_dst = bf16_ld(cols);
  const int chunks = ceil_div(cols, kSumChunk);  // = ceil_div(ld_dst, kSumChunk): kSumChunk is a multiple of 8
  if (chunks > 65535) throw std::invalid_argument("convert_to_bf16_with_row_sums: more than 2^24 columns");
  const dim3 grid(ceil_div(rows, kConvTile), chunks);
  convert_bf16_row_sums_kernel<Src><<<grid, dim3(kConvTile, kConvRows), 0, stream>>>(dst, ld_dst, src, ld_src, rows, cols,
                                                                                scratch);
  EMAE_CHECK_LAUNCH("convert_bf16_row_sums_kernel");
  reduce_chunks_kernel<<<ceil_div(rows, 128), 128, 0, stream>>>(row_sums, scratch, chunks, rows);  // chunk order
  EMAE_CHECK_LAUNCH("reduce_chunks_kernel");
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
  gemm_detail::gemm_reduce_kernel<<<blocks, 256, 0, stream>>>(p, p.splits, p.partial);  // splits 0: the epilogue of zero sums
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
  if (!p.C.is_f32() && (p.accumulate || p.residual)) bad("accumulate and residual need an fp32 C");
  if (p.ldc < p.N) bad("ldc must be >= N");
  if (p.K > 0) {
    if (!p.A || !p.B) bad("A or B is null");
    if (p.lda < (p.a_mn_major ? p.M : p.K)) bad(p.a_mn_major ? "lda must be >= M (A MN-major)" : "lda must be >= K");
    if (p.ldb < (p.b_mn_major ? p.N : p.K)) bad(p.b_mn_major ? "ldb must be >= N (B MN-major)" : "ldb must be >= K");
    if (p.lda % 8 || p.ldb % 8) bad("lda and ldb must be multiples of 8 (16 bytes)");
    if (reinterpret_cast<uintptr_t>(p.A) % 16 || reinterpret_cast<uintptr_t>(p.B) % 16) bad("A and B must be 16-byte aligned");
  }
  if (p.splits < 1) bad("splits must be >= 1");
  if (p.splits > 1 && !p.partial) bad("splits > 1 needs partial");
  if (p.gelu_out && p.gelu_inp) bad("gelu_out and gelu_inp exclude each other");
}

}  // namespace emae::cuda
