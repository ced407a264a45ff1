// Ampere-class bf16 GEMM (issue 11; sm_80 and newer): the GemmBf16Params interface of gemm_bf16.cuh.
//   for split s = blockIdx.z, K range [s·k_split, min(K, (s+1)·k_split)):
//   acc (M, N) = A (M, K) · B (N, K)ᵀ, bf16 operands, fp32 accumulation, then store_epilogue()
//   (each operand K-major, or MN-major when p.a_mn_major / p.b_mn_major: stored (K, M) / (K, N))
//   (epilogue_store: [C +] acc [+ bias] [+ residual] [GELU], or the raw split partial when splits > 1).
// Invariants:
//   - block tile kBM × kBN × kBK = 128 × 128 × 32, 8 warps as 2 × 4, warp tile 64 × 32
//     (4 m16 × 4 n8 mma tiles, 64 fp32 accumulators per thread);
//   - a kStages-deep cp.async pipeline (16-byte cp.async.cg, one commit group per K-tile, empty
//     groups included so wait_group counts stay uniform); one barrier per K-tile;
//   - shared memory per stage: the A tile, then the B tile (Tile below), each in its global
//     orientation: K-major as [kBM or kBN][kBK] (chunks along K, swizzle()), read by ldmatrix, which
//     gives the mma A fragment and the col-major B fragment directly; MN-major as [kBK][kBM or kBN]
//     (chunks along M or N, swizzle_mn()), read by ldmatrix.trans, which transposes each 8 × 8
//     matrix into the same fragments. Rows are unpadded and their 16-byte chunks XOR-swizzled:
//     every ldmatrix phase and every 8-thread cp.async phase touches 8 distinct bank groups;
//   - out-of-range rows (≥ M, ≥ N) and K past the piece's end load as zeros through cp.async's
//     src-size operand (MN-major: a K row past the end reads nothing, the chunk straddling M or N
//     reads only its part); nothing out of range is read from global memory and nothing out of
//     range is stored (store_epilogue checks row < M, col < N);
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

  static_assert(kBK % 16 == 0, "K-tile is whole mma k16 steps");
  static_assert(kChunks == 2 || kChunks == 4 || kChunks == 8, "swizzle: a row is 2, 4 or 8 chunks of a 128-byte line");
  static_assert(kRowsPerLine * kChunks == 8, "swizzle: 8 chunks (128 bytes, all 32 banks) per line");
  static_assert(kWarpM % 16 == 0 && kWarpN % 16 == 0, "B fragments load two n8 tiles per ldmatrix.x4");
  static_assert(kBM % kWarpsM == 0 && kBN % kWarpsN == 0, "warps tile the block");
  // The swizzle pattern repeats every 8 rows (kRowsPerLine · kChunks), so an offset of a multiple
  // of 8 rows adds a constant: per-lane addresses are computed once, tiles add compile-time steps.
  static_assert(kWarpM % 8 == 0 && kWarpN % 8 == 0 && kBM % 8 == 0 && kBN % 8 == 0,
                "row offsets that are multiples of the swizzle period");
  static_assert(kStageBytesA % 128 == 0 && kStageBytes % 128 == 0, "stages start on a bank line");
  static_assert(kStages >= 2, "pipeline");
  static_assert(kBM % 64 == 0 && kBN % 64 == 0, "MN-major rows are whole groups of 8 chunks (swizzle_mn)");
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

// MN-major tile ([kBK][rows]: a row is one k, kChunksPerRow chunks of 8 M or N elements): the
// physical chunk is chunk ^ (k % 8). A row is a whole number of 128-byte lines, so a chunk's bank
// group is its physical chunk % 8. ldmatrix.trans reads 8 consecutive k rows (the first a multiple
// of 8) at one logical chunk: the XOR puts them in 8 distinct bank groups. 8 consecutive copying
// threads write chunks 8c … 8c + 7 of one row: the XOR permutes them among themselves.
template <int kChunksPerRow>
__host__ __device__ constexpr int swizzle_mn(int row, int chunk) {
  return (row * kChunksPerRow + (chunk ^ (row % 8))) * 16;
}

// One operand's stage tile of kRows (kBM or kBN) operand rows: K-major (kMn false) as [kRows][kBK],
// MN-major (kMn true) as [kBK][kRows]; `row`/`chunk` below are the tile's own (a k row when MN-major).
template <bool kMn, int kRows>
struct Tile {
  static constexpr bool kMnMajor = kMn;
  static constexpr int kChunksPerRow = kMn ? kRows / 8 : Traits::kChunks;
  static constexpr int kRowBytes = kChunksPerRow * 16;
  static constexpr int kCopies = kRows * Traits::kChunks / Traits::kThreads;  // 16-byte copies per thread per K-tile
  static constexpr int kCopyRowStep = Traits::kThreads / kChunksPerRow;     // tile rows between one thread's copies
  static_assert(kRows * Traits::kChunks % Traits::kThreads == 0 && Traits::kThreads % kChunksPerRow == 0,
                "even copy split, a thread copies one chunk column");
  static_assert(kCopyRowStep % 8 == 0, "copy row steps are multiples of the swizzle period");
  static_assert(!kMn || kChunksPerRow % 8 == 0, "swizzle_mn: a row is whole 128-byte lines");

  __host__ __device__ static constexpr int offset(int row, int chunk) {
    return kMn ? swizzle_mn<kChunksPerRow>(row, chunk) : swizzle(row, chunk);
  }
  // cp.async copy i of thread tid: consecutive threads walk a row's chunks (contiguous global bytes),
  // then the next row; (mn, k): the operand element its chunk starts at, relative to the tile
  __host__ __device__ static constexpr int copy_row(int tid, int i) { return tid / kChunksPerRow + i * kCopyRowStep; }
  __host__ __device__ static constexpr int copy_chunk(int tid) { return tid % kChunksPerRow; }
  __host__ __device__ static constexpr int copy_mn(int tid, int i) { return kMn ? 8 * copy_chunk(tid) : copy_row(tid, i); }
  __host__ __device__ static constexpr int copy_k(int tid, int i) { return kMn ? copy_row(tid, i) : 8 * copy_chunk(tid); }
};

// The mma fragments of operand A (kIsA) or B from its tile, one ldmatrix.x4 per 16 × 16 block: lanes
// 8j … 8j+7 address the 8 rows of matrix j, where the matrices are, in register order,
//   A (m16 × k16): (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15) → a0 … a3;
//   B (n16 × k16, two n8 tiles): (n 0-7, k 0-7), (n 0-7, k 8-15) → b0, b1 of the first tile,
//     (n 8-15, k 0-7), (n 8-15, k 8-15) → b0, b1 of the second (gemm.cuh's layouts).
// K-major rows run along k: plain ldmatrix gives lane l row l/4, k pair 2(l%4) of each matrix, the
// fragment. MN-major rows run along m or n: ldmatrix.trans gives lane l the k rows 2(l%4), +1 at
// column l/4, the same fragment.
template <bool kIsA, bool kMn>
struct Frag {
  using Tl = Tile<kMn, kIsA ? Traits::kBM : Traits::kBN>;
  static constexpr bool kTrans = kMn;
  // (mn, k) of the block where lane's 8-element row starts
  __host__ __device__ static constexpr int lane_mn(int lane) {
    return kIsA ? (kMn ? 8 * (lane / 8 % 2) : lane % 16) : (kMn ? 8 * (lane / 16) : lane % 8 + 8 * (lane / 16));
  }
  __host__ __device__ static constexpr int lane_k(int lane) {
    return kIsA ? (kMn ? lane % 8 + 8 * (lane / 16) : 8 * (lane / 16)) : (kMn ? lane % 16 : 8 * (lane / 8 % 2));
  }
  // byte offset in the tile of lane's row of the block at operand row mn0, k = 16·q
  __host__ __device__ static constexpr int offset(int lane, int mn0, int q) {
    return kMn ? Tl::offset(16 * q + lane_k(lane), (mn0 + lane_mn(lane)) / 8)
               : Tl::offset(mn0 + lane_mn(lane), (16 * q + lane_k(lane)) / 8);
  }
  // offset(lane, mn0, q) → offset(lane, mn0 + mn, q) for the warp's later blocks (mn a multiple of
  // 8): K-major, whole swizzle periods of rows (a constant); MN-major, mn / 8 more chunks, whose bits
  // are clear in the lane's chunk (its low bit, the warp origin's from log2(kTilesM·2 or kTilesN) up),
  // so adding is XOR-ing, and XOR commutes with the swizzle's.
  __host__ __device__ static constexpr int step(int off, int mn) { return kMn ? off ^ (mn / 8 * 16) : off + mn * Tl::kRowBytes; }
};
static_assert((Traits::kTilesM & (Traits::kTilesM - 1)) == 0 && (Traits::kTilesN & (Traits::kTilesN - 1)) == 0,
              "Frag::step: the warp's block steps are disjoint bits of a power-of-two chunk range");

// One K-tile of an operand into its stage tile at shared address dst: thread tid's copies, issued
// through copy(dst_address, src, src_bytes) (cp_async_16 on the GPU). src (mn_end, k_end) operand
// rows from mn0, K from k0: K-major at src[mn·ld + k], MN-major at src[k·ld + mn].
// K-major: a row past mn_end and K past k_end read nothing; the chunk straddling k_end reads its
// 2·(k_end − k) bytes (in its row: k < k_end ≤ ld; piece ends other than K are multiples of kBK, so
// only K itself is ever straddled). MN-major: a k row past k_end reads nothing; the chunk straddling
// mn_end reads its 2·(mn_end − mn) bytes (mn < mn_end ≤ ld). cp.async zero-fills the rest.
#pragma nv_exec_check_disable
template <class Tl, class Copy>
__host__ __device__ __forceinline__ void copy_tile(const Copy& copy, uint32_t dst, const bf16* src, int ld, int mn0,
                                                   int mn_end, int k0, int k_end, int tid) {
  const uint32_t off = Tl::offset(Tl::copy_row(tid, 0), Tl::copy_chunk(tid));  // + i·kCopyRowStep rows
#pragma unroll
  for (int i = 0; i < Tl::kCopies; ++i) {
    const int mn = mn0 + Tl::copy_mn(tid, i), k = k0 + Tl::copy_k(tid, i);
    const int left = Tl::kMnMajor ? mn_end - mn : k_end - k;  // elements left in the chunk's row
    const bool inside = Tl::kMnMajor ? k < k_end : mn < mn_end;
    const int bytes = inside && left > 0 ? (left < 8 ? 2 * left : 16) : 0;
    const bf16* at = bytes ? src + (Tl::kMnMajor ? (size_t)k * ld + mn : (size_t)mn * ld + k) : src;  // src: a valid address when nothing is read
    copy(dst + off + i * Tl::kCopyRowStep * Tl::kRowBytes, at, bytes);
  }
}

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

// The fragment load of a Frag: ldmatrix, or ldmatrix.trans for an MN-major tile.
template <class F>
__device__ __forceinline__ void ldmatrix_frag(uint32_t (&r)[4], const void* p) {
  if constexpr (F::kTrans) gemm_detail::ldmatrix_x4_trans(r, p);
  else gemm_detail::ldmatrix_x4(r, p);
}

}  // namespace detail

// grid: x over N tiles, y over M tiles (swapped when swap_grid: M tiles > 65535), z over splits.
// p.k_split > 0 (≥ K when p.splits == 1; a multiple of kBK otherwise, so pieces end on chunk
// boundaries except at K itself).
// kGelu: the GELU instantiation (gelu_instantiation(p)); being a template also keeps the header from
// defining an external-linkage kernel per TU.
// kAMn, kBMn: p.a_mn_major, p.b_mn_major (the tiles' layouts and ldmatrix forms are compile-time).
template <bool kGelu, bool kAMn, bool kBMn>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocks) gemm_sm80_kernel(const GemmBf16Params p,
                                                                                     bool swap_grid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // cp.async and bf16 mma need sm_80; the build never targets less
#else
  using T = Traits;
  using FA = Frag<true, kAMn>;
  using FB = Frag<false, kBMn>;
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
  const auto cp_async = [](uint32_t dst, const bf16* src, int bytes) { detail::cp_async_16(dst, src, bytes); };
  auto load_stage = [&](int stage, int kt) {
    const int k0 = k_begin + kt * T::kBK;
    const uint32_t dst = smem + stage * T::kStageBytes;
    copy_tile<typename FA::Tl>(cp_async, dst, p.A, p.lda, m0, p.M, k0, k_end, tid);
    copy_tile<typename FB::Tl>(cp_async, dst + T::kStageBytesA, p.B, p.ldb, n0, p.N, k0, k_end, tid);
  };

  // ---- consumer: per-lane ldmatrix offsets within a stage's tiles for each k16 step; the i-th m16
  // tile and the jp-th n16 pair are FA::step / FB::step away ----
  int a_off[T::kKSteps], b_off[T::kKSteps];
#pragma unroll
  for (int q = 0; q < T::kKSteps; ++q) {
    a_off[q] = FA::offset(lane, wm0, q);
    b_off[q] = FB::offset(lane, wn0, q);
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
      for (int i = 0; i < T::kTilesM; ++i) detail::ldmatrix_frag<FA>(a_frag[i], stage + FA::step(a_off[q], i * 16));
#pragma unroll
      for (int jn = 0; jn < T::kTilesN; jn += 2) {
        uint32_t b_frag[4];  // (n-tile jn: b0, b1), (n-tile jn+1: b0, b1)
        detail::ldmatrix_frag<FB>(b_frag, stage + T::kStageBytesA + FB::step(b_off[q], jn * 8));
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

template <bool kGelu, bool kAMn, bool kBMn>
inline void launch_kernel(const GemmBf16Params& q, dim3 grid, bool swap, cudaStream_t stream) {
  using T = Traits;
  static std::atomic<unsigned long long> smem_opt_in{0};  // one per instantiation
  if (T::kSmemBytes > 48 * 1024) allow_dynamic_smem(gemm_sm80_kernel<kGelu, kAMn, kBMn>, T::kSmemBytes, smem_opt_in);
  gemm_sm80_kernel<kGelu, kAMn, kBMn><<<grid, T::kThreads, T::kSmemBytes, stream>>>(q, swap);
  EMAE_CHECK_LAUNCH("gemm_sm80_kernel");
}

template <bool kGelu>
inline void launch_layout(const GemmBf16Params& q, dim3 grid, bool swap, cudaStream_t stream) {
  if (q.a_mn_major) {
    if (q.b_mn_major) launch_kernel<kGelu, true, true>(q, grid, swap, stream);
    else launch_kernel<kGelu, true, false>(q, grid, swap, stream);
  } else {
    if (q.b_mn_major) launch_kernel<kGelu, false, true>(q, grid, swap, stream);
    else launch_kernel<kGelu, false, false>(q, grid, swap, stream);
  }
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
  if (gelu_instantiation(q)) launch_layout<true>(q, grid, swap, stream);
  else launch_layout<false>(q, grid, swap, stream);
}

}  // namespace emae::cuda::sm80
