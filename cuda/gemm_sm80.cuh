// Ampere-class bf16 GEMM (issue 11; sm_80 and newer): the GemmBf16Params interface of gemm_bf16.cuh.
//   for split s = blockIdx.z, K range [s·k_split, min(K, (s+1)·k_split)):
//   acc (M, N) = A (M, K) · B (N, K)ᵀ, bf16 operands, fp32 accumulation, then store_epilogue()
//   (epilogue_store: [C +] acc [+ bias] [+ residual] [GELU], or the raw split partial when splits > 1).
// Invariants:
//   - block tile kBM × kBN × kBK = 128 × 128 × 32, 8 warps as 2 × 4, warp tile 64 × 32
//     (4 m16 × 4 n8 mma tiles, 64 fp32 accumulators per thread);
//   - a kStages-deep cp.async pipeline (16-byte cp.async.cg, one commit group per K-tile, empty
//     groups included so wait_group counts stay uniform); one barrier per K-tile;
//   - shared memory per stage: A as [kBM][kBK] then B as [kBN][kBK], both K-contiguous like global
//     memory, so ldmatrix (no .trans) gives the mma A fragment and the col-major B fragment directly;
//     rows are unpadded and their 16-byte chunks XOR-swizzled (swizzle() below): every ldmatrix
//     phase and every 8-thread cp.async phase touches 8 distinct bank groups;
//   - out-of-range rows (≥ M, ≥ N) and K past the piece's end load as zeros through cp.async's
//     src-size operand; nothing out of range is read from global memory and nothing out of range is
//     stored (store_epilogue checks row < M, col < N);
//   - an empty K range (K == 0) still runs the epilogue with zero sums (C = [C +] bias + residual);
//   - deterministic: each output is one thread's fixed sequence of mma steps.
// The launcher does not choose split-K (choose_splits) and does not run the reduce
// (gemm_bf16_reduce); the caller does both.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/common.cuh"
#include "cuda/gemm.cuh"
#include "cuda/gemm_bf16.cuh"

namespace emae::cuda::sm80 {

struct Traits {
  static constexpr int kBM = 128, kBN = 128, kBK = 32;
  static constexpr int kStages = 4;                    // 3 tiles in flight while one is multiplied
  static constexpr int kWarpsM = 2, kWarpsN = 4;       // warp grid over the block tile
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kMinBlocks = 2;                 // per SM: caps registers at 128 per thread
  static constexpr int kWarpM = kBM / kWarpsM;         // 64 rows per warp
  static constexpr int kWarpN = kBN / kWarpsN;         // 32 columns per warp
  static constexpr int kTilesM = kWarpM / 16;          // m16 tiles per warp
  static constexpr int kTilesN = kWarpN / 8;           // n8 tiles per warp
  static constexpr int kKSteps = kBK / 16;             // mma k16 steps per K-tile
  static constexpr int kChunks = kBK / 8;              // 16-byte chunks per smem row (4)
  static constexpr int kRowBytes = kBK * 2;            // 64
  static constexpr int kRowsPerLine = 128 / kRowBytes; // rows sharing one 128-byte bank line (2)
  static constexpr int kStageBytesA = kBM * kRowBytes; // 8 KB
  static constexpr int kStageBytesB = kBN * kRowBytes; // 8 KB
  static constexpr int kStageBytes = kStageBytesA + kStageBytesB;
  static constexpr int kSmemBytes = kStages * kStageBytes;  // 64 KB: dynamic shared memory
  static constexpr int kCopiesA = kBM * kChunks / kThreads;  // 16-byte copies per thread per K-tile
  static constexpr int kCopiesB = kBN * kChunks / kThreads;
  static constexpr int kCopyRowStep = kThreads / kChunks;    // rows between one thread's copies (64)

  static_assert(kBK % 16 == 0, "K-tile is whole mma k16 steps");
  static_assert(kChunks == 2 || kChunks == 4 || kChunks == 8, "swizzle: a row is 2, 4 or 8 chunks of a 128-byte line");
  static_assert(kRowsPerLine * kChunks == 8, "swizzle: 8 chunks (128 bytes, all 32 banks) per line");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
  static_assert(kBM % kWarpsM == 0 && kBN % kWarpsN == 0, "warps tile the block");
  static_assert((kBM * kChunks) % kThreads == 0 && (kBN * kChunks) % kThreads == 0, "even copy split");
  static_assert(kThreads % kChunks == 0, "a thread copies the same chunk column of every row it visits");
  // The swizzle pattern repeats every 8 rows (kRowsPerLine · kChunks), so an offset of a multiple
  // of 8 rows adds a constant: per-lane addresses are computed once, tiles add compile-time steps.
  static_assert(kCopyRowStep % 8 == 0 && kWarpM % 8 == 0 && kWarpN % 8 == 0 && kBM % 8 == 0 && kBN % 8 == 0,
                "row offsets that are multiples of the swizzle period");
  static_assert(kStageBytesA % 128 == 0 && kStageBytes % 128 == 0, "stages start on a bank line");
  static_assert(kStages >= 2, "pipeline");
  static_assert(kSmemBytes <= 99 * 1024, "fits every sm_80+ part's opt-in shared memory (sm_86/89: 99 KB)");
};

// Byte offset of chunk `chunk` (8 bf16 = 16 bytes, k = 8·chunk … 8·chunk+7) of tile row `row`
// within one operand's stage buffer ([rows][kBK] bf16, no padding).
// Swizzle: a 128-byte bank line holds kRowsPerLine rows (2 rows of 4 chunks for kBK = 32); the
// physical chunk is chunk ^ ((row / kRowsPerLine) % kChunks). Any 8 consecutive rows starting at a
// multiple of 8 then put a fixed logical chunk into 8 distinct 16-byte bank groups: row % kRowsPerLine
// picks the half line, the XOR a distinct chunk slot within it. That is what ldmatrix reads (8 rows,
// one chunk each, per phase) and what 8 consecutive copying threads write (kRowsPerLine rows, all
// their chunks), so both are conflict-free. Only relative addresses matter, so the buffer needs 16-
// byte alignment, not 128.
__host__ __device__ constexpr int swizzle(int row, int chunk) {
  return (row * Traits::kChunks + (chunk ^ ((row / Traits::kRowsPerLine) % Traits::kChunks))) * 16;
}

// ldmatrix.x4 lane → (row, chunk) within a 16 × 16 operand block, relative to the block's first
// row and k-chunk. A (m16 × k16, row-major): lanes 0-7 (m 0-7, k 0-7) → a0, 8-15 (m 8-15, k 0-7) → a1,
// 16-23 (m 0-7, k 8-15) → a2, 24-31 (m 8-15, k 8-15) → a3: the mma A fragment (gemm.cuh's layout).
__host__ __device__ constexpr int a_lane_row(int lane) { return lane % 16; }
__host__ __device__ constexpr int a_lane_chunk(int lane) { return lane / 16; }
// B stored [n][k] (n16 × k16 = two n8 tiles): lanes 0-7 (n 0-7, k 0-7) → b0 of tile 0, 8-15 (n 0-7,
// k 8-15) → b1 of tile 0, 16-23 (n 8-15, k 0-7) → b0 of tile 1, 24-31 (n 8-15, k 8-15) → b1 of tile 1.
__host__ __device__ constexpr int b_lane_row(int lane) { return lane % 8 + (lane / 16) * 8; }
__host__ __device__ constexpr int b_lane_chunk(int lane) { return (lane / 8) % 2; }
// cp.async copy i of thread tid → (row, chunk) of the stage's operand tile: consecutive threads
// walk a row's chunks (64 contiguous global bytes per row), then the next row.
__host__ __device__ constexpr int copy_row(int tid, int i) { return tid / Traits::kChunks + i * Traits::kCopyRowStep; }
__host__ __device__ constexpr int copy_chunk(int tid) { return tid % Traits::kChunks; }

namespace detail {

// 16-byte global → shared copy; src_bytes < 16 reads only src_bytes and zero-fills the rest
// (0: reads nothing, the chunk becomes zeros; src must still be a valid global address).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(__cvta_generic_to_global(src)),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>  // wait until at most N of this thread's groups are still in flight
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace detail

// grid: x over N tiles, y over M tiles (swapped when swap_grid: M tiles > 65535), z over splits.
// p.k_split > 0 (≥ K when p.splits == 1; a multiple of kBK otherwise, so pieces end on chunk
// boundaries except at K itself).
// kGelu: the GELU instantiation (gelu_instantiation(p)); being a template also keeps the header from
// defining an external-linkage kernel per TU.
template <bool kGelu>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks) gemm_sm80_kernel(const GemmBf16Params p,
                                                                                     bool swap_grid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // cp.async and bf16 mma need sm_80; the build never targets less
#else
  using T = Traits;
  extern __shared__ __align__(128) unsigned char gemm_sm80_smem[];  // [kStages][A tile | B tile]
  const uint32_t smem = gemm_detail::smem_addr(gemm_sm80_smem);

  const int tile_m = swap_grid ? blockIdx.x : blockIdx.y;
  const int tile_n = swap_grid ? blockIdx.y : blockIdx.x;
  const int m0 = tile_m * T::kBM, n0 = tile_n * T::kBN;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm0 = (warp / T::kWarpsN) * T::kWarpM, wn0 = (warp % T::kWarpsN) * T::kWarpN;
  const int split = blockIdx.z;
  const int k_begin = split * p.k_split, k_end = min(p.K, k_begin + p.k_split);
  const int k_tiles = k_end > k_begin ? (k_end - k_begin + T::kBK - 1) / T::kBK : 0;

  // ---- producer: copies of one K-tile into one stage ----
  const int cchunk = copy_chunk(tid);
  const uint32_t copy_off = swizzle(copy_row(tid, 0), cchunk);  // + i · kCopyRowStep rows (a multiple of 8)
  auto load_stage = [&](int stage, int kt) {
    const int k = k_begin + kt * T::kBK + cchunk * 8;  // first element of this thread's chunk
    // Chunks past the piece's end read nothing; the one straddling K reads its 2·(K − k) bytes
    // (in its row: k < K ≤ ld) and cp.async zero-fills the rest, whatever the row's padding holds.
    // Piece ends other than K are multiples of kBK, so only K itself is ever straddled.
    const int k_bytes = k < k_end ? min(16, 2 * (k_end - k)) : 0;
    const uint32_t dst = smem + stage * T::kStageBytes + copy_off;
#pragma unroll
    for (int i = 0; i < T::kCopiesA; ++i) {
      const int row = m0 + copy_row(tid, i);
      const int bytes = row < p.M ? k_bytes : 0;
      const bf16* src = bytes ? p.A + (size_t)row * p.lda + k : p.A;  // p.A: a valid address when nothing is read
      detail::cp_async_16(dst + i * T::kCopyRowStep * T::kRowBytes, src, bytes);
    }
#pragma unroll
    for (int i = 0; i < T::kCopiesB; ++i) {
      const int row = n0 + copy_row(tid, i);
      const int bytes = row < p.N ? k_bytes : 0;
      const bf16* src = bytes ? p.B + (size_t)row * p.ldb + k : p.B;
      detail::cp_async_16(dst + T::kStageBytesA + i * T::kCopyRowStep * T::kRowBytes, src, bytes);
    }
  };

  // ---- consumer: per-lane ldmatrix offsets within a stage for each k16 step; the i-th m16 tile
  // adds 16 rows, the jp-th n16 pair 16 rows (multiples of the swizzle period) ----
  uint32_t a_off[T::kKSteps], b_off[T::kKSteps];
#pragma unroll
  for (int q = 0; q < T::kKSteps; ++q) {
    a_off[q] = swizzle(wm0 + a_lane_row(lane), 2 * q + a_lane_chunk(lane));
    b_off[q] = T::kStageBytesA + swizzle(wn0 + b_lane_row(lane), 2 * q + b_lane_chunk(lane));
  }

  float acc[T::kTilesM][T::kTilesN][4];
#pragma unroll
  for (int i = 0; i < T::kTilesM; ++i)
#pragma unroll
    for (int j = 0; j < T::kTilesN; ++j)
#pragma unroll
      for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

  // prologue: K-tiles 0 … kStages−2 in flight, one group each (empty past k_tiles)
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s);
    detail::cp_async_commit();
  }

  for (int kt = 0; kt < k_tiles; ++kt) {
    // groups committed so far: kStages−1 + kt; tile kt is group kt, so ≤ kStages−2 may still fly
    detail::cp_async_wait<T::kStages - 2>();
    // every thread's copies of tile kt are visible, and every warp has finished tile kt−1, whose
    // stage ((kt − 1) mod kStages) the copy below refills
    __syncthreads();
    {
      const int next = kt + T::kStages - 1;
      if (next < k_tiles) load_stage(next % T::kStages, next);
      detail::cp_async_commit();
    }
    const unsigned char* stage = gemm_sm80_smem + (kt % T::kStages) * T::kStageBytes;
#pragma unroll
    for (int q = 0; q < T::kKSteps; ++q) {
      uint32_t a_frag[T::kTilesM][4];
#pragma unroll
      for (int i = 0; i < T::kTilesM; ++i) gemm_detail::ldmatrix_x4(a_frag[i], stage + a_off[q] + i * 16 * T::kRowBytes);
#pragma unroll
      for (int jn = 0; jn < T::kTilesN; jn += 2) {
        uint32_t b_frag[4];  // (n-tile jn: b0, b1), (n-tile jn+1: b0, b1)
        gemm_detail::ldmatrix_x4(b_frag, stage + b_off[q] + jn * 8 * T::kRowBytes);
#pragma unroll
        for (int i = 0; i < T::kTilesM; ++i) {
          gemm_detail::mma_bf16(acc[i][jn], a_frag[i], b_frag[0], b_frag[1]);
          gemm_detail::mma_bf16(acc[i][jn + 1], a_frag[i], b_frag[2], b_frag[3]);
        }
      }
    }
  }
  detail::cp_async_wait<0>();  // only empty groups remain; leave nothing in flight

  // epilogue: c0c1 = (row g, cols 2t, 2t+1), c2c3 = (row g+8, same cols); col is even
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int i = 0; i < T::kTilesM; ++i)
#pragma unroll
    for (int jn = 0; jn < T::kTilesN; ++jn) {
      const int row = m0 + wm0 + i * 16 + g, col = n0 + wn0 + jn * 8 + 2 * t;
      store_epilogue<kGelu>(p, split, row, col, acc[i][jn][0], acc[i][jn][1]);
      store_epilogue<kGelu>(p, split, row + 8, col, acc[i][jn][2], acc[i][jn][3]);
    }
#endif
}

template <bool kGelu>
inline void launch_kernel(const GemmBf16Params& q, dim3 grid, bool swap, cudaStream_t stream) {
  using T = Traits;
  static std::atomic<unsigned long long> smem_opt_in{0};  // one per instantiation
  if (T::kSmemBytes > 48 * 1024) allow_dynamic_smem(gemm_sm80_kernel<kGelu>, T::kSmemBytes, smem_opt_in);
  gemm_sm80_kernel<kGelu><<<grid, T::kThreads, T::kSmemBytes, stream>>>(q, swap);
  EMAE_CHECK_LAUNCH("gemm_sm80_kernel");
}

// Runs the kernel for p with p.splits / p.k_split as chosen by the caller (choose_splits with
// Traits' tile); with p.splits > 1 the caller reduces p.partial afterwards (gemm_bf16_reduce).
// `sms` is unused: the grid is one block per output tile and split (kept for sm90::launch's signature).
inline void launch(const GemmBf16Params& p, int sms, cudaStream_t stream) {
  using T = Traits;
  (void)sms;
  if (p.M == 0 || p.N == 0) return;
  auto bad = [](const std::string& what) { throw std::invalid_argument("gemm_sm80: " + what); };
  GemmBf16Params q = p;
  if (q.splits < 1) bad("splits must be >= 1");
  if (q.splits == 1) {
    q.k_split = std::max(q.K, 1);  // one piece covers all of K
  } else if (q.k_split <= 0 || q.k_split % T::kBK || (long long)q.k_split * q.splits < q.K) {
    bad("k_split must be a positive multiple of " + std::to_string(T::kBK) + " with splits · k_split >= K");
  }
  const int tiles_m = ceil_div(q.M, T::kBM), tiles_n = ceil_div(q.N, T::kBN);
  const bool swap = tiles_m > 65535;  // grid.y (and z) are limited to 65535
  if ((swap ? tiles_n : tiles_m) > 65535 || q.splits > 65535) bad("matrix too large for the grid");
  const dim3 grid(swap ? tiles_m : tiles_n, swap ? tiles_n : tiles_m, q.splits);
  if (gelu_instantiation(q)) launch_kernel<true>(q, grid, swap, stream);
  else launch_kernel<false>(q, grid, swap, stream);
}

}  // namespace emae::cuda::sm80
