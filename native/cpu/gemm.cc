// Cache-blocked fp32 GEMM (see gemm.h).
//
// Per (B panel of ≤ kNC columns, depth block of ≤ kKC):
//   1. all threads pack the panel of op(B) into NR-wide slivers (kc, NR), zero-padded — shared;
//   2. each thread walks its own MR-row slivers of C; per sliver it keeps A (MR × kc) hot in L1
//      and streams the packed B slivers from L2 through the micro-kernel.
// A is read in place when it is row-major (MR row streams, no packing pass: packing it cost ~15%
// of the GEMM at these shapes); a transposed A (the weight-gradient GEMMs) is copied per sliver,
// MR contiguous floats per k, so the micro-kernel reads one contiguous stream.
// Bias and residual are added in the micro-kernel's store on the last depth block, so C is
// written once. Every C tile belongs to one thread and sums its depth blocks in a fixed order
// (block sizes do not depend on the thread count): bitwise identical for any thread count.
#include "cpu/gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/gemm_amx.h"
#include "cpu/gemm_avx512bf16.h"
#include "cpu/gemm_util.h"
#include "cpu/transpose.h"

namespace emae::cpu {
namespace {

constexpr int kKC = 256;  // max depth per block: A sliver (12 × 256 fp32 = 12 KiB) stays in L1
constexpr int kNC = 768;  // max B panel width: 256 × 768 fp32 = 768 KiB, resident in L2
constexpr int kMaxMR = 12, kMaxNR = 32;
static_assert(kNC % 32 == 0 && kNC % 16 == 0 && kNC % 8 == 0, "kNC must be a multiple of each NR");

using gemm_util::TileStore;
using gemm_util::aligned_scratch;
using gemm_util::split_size;

// Micro-kernel: c (MR, NR) at ldc = Σ_k a(i, k) · b[k·NR + j] [+ c] [+ bias] [+ residual], in that order.
// kDirectA: a(i, k) = a[i·lda + k] (row-major A read in place); else a(i, k) = a[k·MR + i] (packed).
using MicroKernel = void (*)(int kc, const float* a, int lda, const float* b, float* c, int ldc, const TileStore& st);

template <bool kDirectA>
__attribute__((target("avx512f"))) void micro_avx512(int kc, const float* a, int lda, const float* b, float* c,
                                                     int ldc, const TileStore& st) {
  constexpr int MR = 12;
  // every loop over acc is fully unrolled: an indexed access would keep acc in memory (GCC then
  // stores each accumulator on every k step, which halved the AVX2 kernel's speed)
  __m512 acc[MR][2];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * 32);
    const __m512 b1 = _mm512_load_ps(b + k * 32 + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(kDirectA ? a[(size_t)i * lda + k] : a[k * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (st.bias) bias0 = _mm512_loadu_ps(st.bias), bias1 = _mm512_loadu_ps(st.bias + 16);
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i) {
    float* ci = c + (size_t)i * ldc;
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if (st.add) v0 = _mm512_add_ps(v0, _mm512_loadu_ps(ci)), v1 = _mm512_add_ps(v1, _mm512_loadu_ps(ci + 16));
    if (st.bias) v0 = _mm512_add_ps(v0, bias0), v1 = _mm512_add_ps(v1, bias1);
    if (st.residual) {
      const float* ri = st.residual + (size_t)i * ldc;
      v0 = _mm512_add_ps(v0, _mm512_loadu_ps(ri)), v1 = _mm512_add_ps(v1, _mm512_loadu_ps(ri + 16));
    }
    _mm512_storeu_ps(ci, v0);
    _mm512_storeu_ps(ci + 16, v1);
  }
}

template <bool kDirectA>
__attribute__((target("avx2,fma"))) void micro_avx2(int kc, const float* a, int lda, const float* b, float* c,
                                                    int ldc, const TileStore& st) {
  constexpr int MR = 6;
  __m256 acc[MR][2];  // (loops over acc fully unrolled, as in micro_avx512)
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * 16);
    const __m256 b1 = _mm256_load_ps(b + k * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(kDirectA ? a + (size_t)i * lda + k : a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
  if (st.bias) bias0 = _mm256_loadu_ps(st.bias), bias1 = _mm256_loadu_ps(st.bias + 8);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* ci = c + (size_t)i * ldc;
    __m256 v0 = acc[i][0], v1 = acc[i][1];
    if (st.add) v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ci)), v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ci + 8));
    if (st.bias) v0 = _mm256_add_ps(v0, bias0), v1 = _mm256_add_ps(v1, bias1);
    if (st.residual) {
      const float* ri = st.residual + (size_t)i * ldc;
      v0 = _mm256_add_ps(v0, _mm256_loadu_ps(ri)), v1 = _mm256_add_ps(v1, _mm256_loadu_ps(ri + 8));
    }
    _mm256_storeu_ps(ci, v0);
    _mm256_storeu_ps(ci + 8, v1);
  }
}

// The store of a (rows, cols) block of sums acc (at ld_acc), one element at a time: the
// portable kernel's store and the edge tiles' (the vector kernels store the same way).
void store_scalar(const float* acc, int ld_acc, int rows, int cols, float* c, int ldc, const TileStore& st) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      float v = acc[i * ld_acc + j];
      if (st.add) v += c[(size_t)i * ldc + j];
      if (st.bias) v += st.bias[j];
      if (st.residual) v += st.residual[(size_t)i * ldc + j];
      c[(size_t)i * ldc + j] = v;
    }
}

template <bool kDirectA>
void micro_generic(int kc, const float* a, int lda, const float* b, float* c, int ldc, const TileStore& st) {
  constexpr int MR = 4, NR = 8;
  float acc[MR][NR] = {};
  for (int k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i) {
      const float ai = kDirectA ? a[(size_t)i * lda + k] : a[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[k * NR + j];
    }
  store_scalar(&acc[0][0], NR, MR, NR, c, ldc, st);
}

struct KernelInfo {
  MicroKernel direct, packed;
  int mr, nr;
  const char* name;
};

// The widest kernel the CPU runs. EMAE_GEMM_KERNEL=avx2|generic picks a narrower one (never a
// wider one), so the tests can cover every kernel on one machine.
KernelInfo select_kernel() {
  __builtin_cpu_init();
  const char* env = std::getenv("EMAE_GEMM_KERNEL");
  const std::string cap = env ? env : "";
  const bool allow_avx512 = cap.empty() || cap == "avx512", allow_avx2 = allow_avx512 || cap == "avx2";
  if (allow_avx512 && __builtin_cpu_supports("avx512f")) return {micro_avx512<true>, micro_avx512<false>, 12, 32, "avx512"};
  if (allow_avx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {micro_avx2<true>, micro_avx2<false>, 6, 16, "avx2"};
  return {micro_generic<true>, micro_generic<false>, 4, 8, "generic"};
}

const KernelInfo& kernel() {
  static const KernelInfo info = select_kernel();
  return info;
}

// Copy op(A)[i0 .. i0+rows, k0 .. k0+kc) as one (kc, MR) sliver, rows ≥ `rows` zero.
void pack_a_sliver(const GemmParams& p, int i0, int rows, int k0, int kc, int MR, float* dst) {
  if (p.trans_a) {
    for (int k = 0; k < kc; ++k) {
      const float* src = p.A + (size_t)(k0 + k) * p.lda + i0;
      float* d = dst + (size_t)k * MR;
      if (k + 8 < kc) __builtin_prefetch(src + 8 * (size_t)p.lda);  // strided rows, as in pack_b_sliver
      if (rows == kMaxMR && MR == kMaxMR) {
        std::memcpy(d, src, sizeof(float) * kMaxMR);  // fixed size: inlined moves, not a call
      } else {
        for (int r = 0; r < rows; ++r) d[r] = src[r];
        for (int r = rows; r < MR; ++r) d[r] = 0.f;
      }
    }
  } else {
    for (int k = 0; k < kc; ++k) {
      float* d = dst + (size_t)k * MR;
      for (int r = 0; r < rows; ++r) d[r] = p.A[(size_t)(i0 + r) * p.lda + k0 + k];
      for (int r = rows; r < MR; ++r) d[r] = 0.f;
    }
  }
}


// Copy op(B)[k0 .. k0+kc, j0 .. j0+cols) as one (kc, NR) sliver, columns ≥ `cols` zero.
void pack_b_sliver(const GemmParams& p, int k0, int kc, int j0, int cols, int NR, float* dst) {
  if (p.trans_b && NR == 32 && cols == NR) {
    // the AVX-512 kernel's slivers: whole 16 × 16 blocks in registers (a scalar transpose cost
    // ~10% of the forward GEMMs when M is a few hundred rows), the k remainder below
    int k = 0;
    for (; k + 16 <= kc; k += 16)
      for (int cb = 0; cb < NR; cb += 16)
        transpose16x16(p.B + (size_t)(j0 + cb) * p.ldb + k0 + k, p.ldb, dst + (size_t)k * NR + cb, NR);
    for (; k < kc; ++k)
      for (int c = 0; c < NR; ++c) dst[(size_t)k * NR + c] = p.B[(size_t)(j0 + c) * p.ldb + k0 + k];
    return;
  }
  if (p.trans_b && NR == 16 && cols == NR) {  // the AVX2 kernel's slivers: 8 × 8 blocks
    int k = 0;
    for (; k + 8 <= kc; k += 8)
      for (int cb = 0; cb < NR; cb += 8)
        transpose8x8(p.B + (size_t)(j0 + cb) * p.ldb + k0 + k, p.ldb, dst + (size_t)k * NR + cb, NR);
    for (; k < kc; ++k)
      for (int c = 0; c < NR; ++c) dst[(size_t)k * NR + c] = p.B[(size_t)(j0 + c) * p.ldb + k0 + k];
    return;
  }
  if (!p.trans_b) {
    for (int k = 0; k < kc; ++k) {
      float* d = dst + (size_t)k * NR;
      const float* src = p.B + (size_t)(k0 + k) * p.ldb + j0;
      // rows of activations at a stride of a few hundred bytes, read once: ask 8 rows ahead
      if (k + 8 < kc) __builtin_prefetch(src + 8 * (size_t)p.ldb), __builtin_prefetch(src + 8 * (size_t)p.ldb + 16);
      if (cols == kMaxNR && NR == kMaxNR) {
        std::memcpy(d, src, sizeof(float) * kMaxNR);  // fixed size: inlined moves, not a call
      } else {
        for (int c = 0; c < cols; ++c) d[c] = src[c];
        for (int c = cols; c < NR; ++c) d[c] = 0.f;
      }
    }
  } else {
    // B stored (N, K): a transpose; cheap next to the M·kc·NR multiply-adds that reuse it
    for (int c = 0; c < cols; ++c) {
      const float* src = p.B + (size_t)(j0 + c) * p.ldb + k0;
      for (int k = 0; k < kc; ++k) dst[(size_t)k * NR + c] = src[k];
    }
    for (int k = 0; k < kc; ++k)
      for (int c = cols; c < NR; ++c) dst[(size_t)k * NR + c] = 0.f;
  }
}

// C = bias + residual (+ C) when there is nothing to multiply (K = 0).
void gemm_no_depth(const GemmParams& p) {
#pragma omp parallel for schedule(static)
  for (int i = 0; i < p.M; ++i) {
    float* c = p.C + (size_t)i * p.ldc;
    for (int j = 0; j < p.N; ++j)
      c[j] = (p.accumulate ? c[j] : 0.f) + (p.bias ? p.bias[j] : 0.f) +
             (p.residual ? p.residual[(size_t)i * p.ldc + j] : 0.f);
  }
  if (p.tile_epilogue) p.tile_epilogue(p, 0, p.M, 0, p.N);
}

// One depth block [k0, k0 + kc) of the tiles [t0, t1) of a panel: row-major over (row sliver,
// column sliver), columns from j0, the panel's B already packed in b_pack.
struct PanelBlock {
  int j0, nc, col_slivers;  // panel columns [j0, j0 + nc)
  int k0, kc;
  bool last;                // the last depth block: add bias and residual
  const float* b_pack;
};

void run_tiles(const GemmParams& p, const KernelInfo& kinfo, const PanelBlock& blk, long t0, long t1,
               float* a_pack, float* edge) {
  const int MR = kinfo.mr, NR = kinfo.nr;
  int packed_sliver = -1;  // row sliver currently in a_pack
  for (long t = t0; t < t1; ++t) {
    const int is = (int)(t / blk.col_slivers), js = (int)(t % blk.col_slivers);
    const int i0 = is * MR, rows = std::min(MR, p.M - i0);
    const int jt = js * NR, cols = std::min(NR, blk.nc - jt);
    const bool direct = !p.trans_a && rows == MR;
    if (!direct && packed_sliver != is) {
      pack_a_sliver(p, i0, rows, blk.k0, blk.kc, MR, a_pack);
      packed_sliver = is;
    }
    const float* ap = direct ? p.A + (size_t)i0 * p.lda + blk.k0 : a_pack;
    const MicroKernel fn = direct ? kinfo.direct : kinfo.packed;
    const float* bp = blk.b_pack + (size_t)jt * blk.kc;
    const int j = blk.j0 + jt;
    float* c = p.C + (size_t)i0 * p.ldc + j;
    TileStore st;
    st.add = p.accumulate || blk.k0 > 0;
    if (blk.last) {
      st.bias = p.bias ? p.bias + j : nullptr;
      st.residual = p.residual ? p.residual + (size_t)i0 * p.ldc + j : nullptr;
    }
    // The tile of C and the store's other inputs are cold (written long before, or never):
    // fetch them while the micro-kernel runs (thousands of cycles), not when the store stalls.
    for (int i = 0; i < rows; ++i)
      for (int jj = 0; jj < cols; jj += 16) {
        __builtin_prefetch(c + (size_t)i * p.ldc + jj, 1);
        if (!blk.last) continue;
        if (st.residual) __builtin_prefetch(st.residual + (size_t)i * p.ldc + jj);
        if (p.epilogue_in) __builtin_prefetch(p.epilogue_in + (size_t)(i0 + i) * p.ldc + j + jj);
        if (p.epilogue_out) __builtin_prefetch(p.epilogue_out + (size_t)(i0 + i) * p.ldc + j + jj, 1);
      }
    if (rows == MR && cols == NR) {
      fn(blk.kc, ap, p.lda, bp, c, p.ldc, st);
    } else {
      fn(blk.kc, ap, p.lda, bp, edge, NR, TileStore{});
      store_scalar(edge, NR, rows, cols, c, p.ldc, st);
    }
    if (blk.last && p.tile_epilogue) p.tile_epilogue(p, i0, rows, j, cols);
  }
}

void pack_b_panel(const GemmParams& p, int NR, const PanelBlock& blk, int s0, int s1, float* b_pack) {
  for (int s = s0; s < s1; ++s)
    pack_b_sliver(p, blk.k0, blk.kc, blk.j0 + s * NR, std::min(NR, blk.nc - s * NR), NR, b_pack + (size_t)s * NR * blk.kc);
}

struct Bf16Kernel {
  void (*run)(const GemmParams&) = nullptr;
  const char* name = nullptr;
  std::string why;  // when run is null
};

// AMX where it runs, else AVX512-BF16, else none (why names what each lacks).
Bf16Kernel select_bf16_kernel() {
  const char* env = std::getenv("EMAE_BF16_KERNEL");
  const std::string cap = env ? env : "";
  Bf16Kernel k;
  if (!cap.empty() && cap != "amx-bf16" && cap != "avx512-bf16") {
    k.why = "EMAE_BF16_KERNEL='" + cap + "' names no bf16 kernel (amx-bf16 or avx512-bf16)";
    return k;
  }
  std::string amx_why = "left out by EMAE_BF16_KERNEL", avx_why = "left out by EMAE_BF16_KERNEL";
  if (cap != "avx512-bf16" && amx_bf16_available(&amx_why)) return {gemm_amx_bf16, "amx-bf16", ""};
  if (cap != "amx-bf16" && avx512_bf16_available(&avx_why)) return {gemm_avx512_bf16, "avx512-bf16", ""};
  k.why = "it needs AMX-BF16 or AVX512-BF16; AMX: " + amx_why + "; AVX512-BF16: " + avx_why;
  return k;
}

const Bf16Kernel& bf16_kernel() {
  static const Bf16Kernel info = select_bf16_kernel();
  return info;
}

}  // namespace

const char* gemm_kernel_name() { return kernel().name; }

const char* gemm_bf16_kernel_name(std::string* why) {
  const Bf16Kernel& k = bf16_kernel();
  if (why) *why = k.why;
  return k.name;
}

void gemm(const GemmParams& p) {
  if (p.M <= 0 || p.N <= 0) return;
  if (p.K <= 0) return gemm_no_depth(p);
  if (p.bf16) {
    const Bf16Kernel& k = bf16_kernel();
    if (!k.run) throw std::runtime_error("bf16 GEMM: " + k.why);
    return k.run(p);
  }
  const KernelInfo& kinfo = kernel();
  const int MR = kinfo.mr, NR = kinfo.nr;
  const int kc_max = std::min(p.K, (split_size(p.K, kKC) + 15) / 16 * 16);  // whole 16-k blocks for the transposes
  const int row_slivers = (p.M + MR - 1) / MR;
  const int all_col_slivers = (p.N + NR - 1) / NR;
  const int team = omp_get_max_threads();
  // Few rows (the weight-gradient GEMMs: M = out features, K = tokens): each thread owns whole
  // columns and packs its own B, so the long depth loop needs no barrier; packing A (MR floats
  // per k, contiguous) in every thread costs little. Many rows: the threads share each packed B
  // panel and split the rows.
  const bool by_columns = row_slivers < 16 * team && all_col_slivers >= team;

  thread_local std::vector<float> shared_b;  // the team's panel (row split), owned by the caller
  const int shared_nc = (split_size(p.N, kNC) + NR - 1) / NR * NR;
  float* b_shared = by_columns ? nullptr : aligned_scratch(shared_b, (size_t)kc_max * shared_nc);

#pragma omp parallel
  {
    thread_local std::vector<float> a_buf, b_own;
    float* a_pack = aligned_scratch(a_buf, (size_t)kKC * kMaxMR);
    alignas(64) float edge[kMaxMR * kMaxNR];
    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();

    if (by_columns) {
      const int s0 = (int)((long)all_col_slivers * tid / nthreads), s1 = (int)((long)all_col_slivers * (tid + 1) / nthreads);
      const int own_nc_max = std::min(p.N - s0 * NR, (s1 - s0) * NR);
      const int nc_max = (split_size(std::max(own_nc_max, 1), kNC) + NR - 1) / NR * NR;
      float* b_pack = aligned_scratch(b_own, (size_t)kc_max * nc_max);
      for (int j0 = s0 * NR; j0 < std::min(p.N, s1 * NR); j0 += nc_max) {
        const int nc = std::min({nc_max, p.N - j0, s1 * NR - j0});
        const int col_slivers = (nc + NR - 1) / NR;
        for (int k0 = 0; k0 < p.K; k0 += kc_max) {
          const int kc = std::min(kc_max, p.K - k0);
          const PanelBlock blk{j0, nc, col_slivers, k0, kc, k0 + kc >= p.K, b_pack};
          pack_b_panel(p, NR, blk, 0, col_slivers, b_pack);
          run_tiles(p, kinfo, blk, 0, (long)row_slivers * col_slivers, a_pack, edge);
        }
      }
    } else {
      for (int j0 = 0; j0 < p.N; j0 += shared_nc) {
        const int nc = std::min(shared_nc, p.N - j0);
        const int col_slivers = (nc + NR - 1) / NR;
        // this thread's tiles: whole row slivers when there are enough, else (row, column) tiles
        const long tiles = (long)row_slivers * col_slivers;
        const bool by_rows = row_slivers >= 4 * nthreads;
        const long units = by_rows ? row_slivers : tiles;
        const long u0 = units * tid / nthreads, u1 = units * (tid + 1) / nthreads;
        const long t0 = by_rows ? u0 * col_slivers : u0, t1 = by_rows ? u1 * col_slivers : u1;
        for (int k0 = 0; k0 < p.K; k0 += kc_max) {
          const int kc = std::min(kc_max, p.K - k0);
          const PanelBlock blk{j0, nc, col_slivers, k0, kc, k0 + kc >= p.K, b_shared};
          pack_b_panel(p, NR, blk, col_slivers * tid / nthreads, col_slivers * (tid + 1) / nthreads, b_shared);
#pragma omp barrier
          // (the panel is complete)
          run_tiles(p, kinfo, blk, t0, t1, a_pack, edge);
#pragma omp barrier
          // (nobody still reads the panel when the next one is packed)
        }
      }
    }
  }
}

}  // namespace emae::cpu
