// AVX512-BF16 GEMM (see gemm_avx512bf16.h). Invariants:
//   - op(A) and op(B) are packed whole, once per call, into slivers of bf16 pairs: A as
//     [row sliver][K_pairs][kMR] and B as [column sliver][K_pairs][kNR], each 32-bit element
//     holding (k = 2·k2, k = 2·k2 + 1) with the even k in the low half (VNNI order, as the AMX
//     path's B); lanes past M or N and the odd K's last half are zero;
//   - C is walked in panels of ≤ kNC columns and depth blocks of ≤ kKC2 pairs (A sliver in L1,
//     the B panel in L2, as in gemm.cc's fp32 path); each kMR × kNR tile of C belongs to one
//     thread, which sums its depth blocks in order into C (fp32), adding bias and residual and
//     calling tile_epilogue after the last one. Block sizes depend only on the shape: every
//     output element sums K in one fixed order, whatever the thread count.
// Every function that uses AVX-512 carries its own target attribute: the rest of the addon keeps
// running on CPUs without it, and this code runs only after avx512_bf16_available().
#include "cpu/gemm_avx512bf16.h"

// AVX512-BF16 intrinsics need GCC >= 11 or Clang >= 12 on x86-64; elsewhere the stubs at the
// bottom are built (the kernel then reports itself unavailable).
#if defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define EMAE_HAVE_AVX512BF16 1
#else
#define EMAE_HAVE_AVX512BF16 0
#endif

#if EMAE_HAVE_AVX512BF16

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cpu/gemm_util.h"
#include "cpu/transpose.h"

#define EMAE_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

namespace emae::cpu {
namespace {

constexpr int kMR = 12, kNR = 32;  // C tile per micro-kernel: 12 rows × 2 zmm = 24 accumulators
constexpr int kKC2 = 128;          // max depth block in k-pairs: A sliver 12 × 128 × 4 B = 6 KiB (L1)
constexpr int kNC = 768;           // max panel width: 768 × 128 pairs × 4 B = 384 KiB of B (L2)
static_assert(kNR == 32 && kNC % kNR == 0, "the micro-kernel holds two 16-lane column vectors");

// One operand as the packer sees it: element (i, k), i along M (or N), k along K.
struct Operand {
  const float* data;
  int ld;
  bool k_contiguous;  // (i, k) at data[i·ld + k]; else at data[k·ld + i]
  int extent, K;      // i < extent, k < K; zero beyond
};

__mmask16 first_lanes(int n) { return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1); }

// Lanes [i0, i0 + width) of `op` → dst [kpairs][width] bf16 pairs (past extent or K: zero).
// width is kMR or kNR; 16 lanes at a time.
EMAE_AVX512BF16 void pack_sliver(const Operand& op, int i0, int width, int kpairs, uint32_t* dst) {
  const __m512 zero = _mm512_setzero_ps();
  for (int g = 0; g < width; g += 16) {
    const int live = std::clamp(std::min(op.extent - i0, width) - g, 0, 16);  // lanes holding data
    const __mmask16 store = first_lanes(width - g);         // lanes of this sliver
    if (live == 0) {
      for (int k2 = 0; k2 < kpairs; ++k2) _mm512_mask_storeu_epi32(dst + (size_t)k2 * width + g, store, _mm512_setzero_si512());
      continue;
    }
    if (!op.k_contiguous) {
      // rows k and k + 1 hold the two halves of `live` consecutive lanes' pairs: convert both
      // (row k in the low 16 bf16), then interleave them into (k, k + 1) pairs per lane
      const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                  23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
      const __mmask16 load = first_lanes(live);
      for (int k2 = 0; k2 < kpairs; ++k2) {
        const float* even = op.data + (size_t)(2 * k2) * op.ld + i0 + g;
        const __m512 hi = 2 * k2 + 1 < op.K ? _mm512_maskz_loadu_ps(load, even + op.ld) : zero;
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(hi, _mm512_maskz_loadu_ps(load, even));
        _mm512_mask_storeu_epi32(dst + (size_t)k2 * width + g, store, _mm512_permutexvar_epi16(interleave, both));
      }
    } else {
      // each lane's k run is contiguous and converts to 16 pairs per 32 k; a 16 × 16 transpose of
      // the 32-bit pairs then puts the lanes side by side
      alignas(64) uint32_t block[16 * 16], tblock[16 * 16];
      for (int c2 = 0; c2 < kpairs; c2 += 16) {
        const int k = 2 * c2, kn = std::min(32, op.K - k);
        const __mmask16 lo_mask = first_lanes(kn), hi_mask = first_lanes(kn - 16);
        for (int e = 0; e < 16; ++e) {
          __m512i pairs = _mm512_setzero_si512();
          if (e < live) {
            const float* row = op.data + (size_t)(i0 + g + e) * op.ld + k;
            pairs = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi_mask, row + 16), _mm512_maskz_loadu_ps(lo_mask, row));
          }
          _mm512_store_si512(block + e * 16, pairs);
        }
        transpose16x16(reinterpret_cast<const float*>(block), 16, reinterpret_cast<float*>(tblock), 16);
        for (int r = 0; r < std::min(16, kpairs - c2); ++r)
          _mm512_mask_storeu_epi32(dst + (size_t)(c2 + r) * width + g, store, _mm512_load_si512(tblock + r * 16));
      }
    }
  }
}

using gemm_util::TileStore;
using gemm_util::aligned_scratch;
using gemm_util::split_size;

// c (rows ≤ kMR, cols ≤ kNR) at ldc = Σ over the k-pairs [0, kp) of a [kp][kMR] · b [kp][kNR]
// (VDPBF16PS: both products of a pair added to the fp32 sum) [+ c] [+ bias] [+ residual], in
// that order (the fp32 path's). Rows and columns past (rows, cols) are computed, not stored.
EMAE_AVX512BF16 void micro_bf16(int kp, const uint32_t* a, const uint32_t* b, float* c, int ldc, int rows, int cols,
                                const TileStore& st) {
  // loops over acc fully unrolled so it stays in registers (see gemm.cc's micro_avx512)
  __m512 acc[kMR][2];
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k2 = 0; k2 < kp; ++k2) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + (size_t)k2 * kNR);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + (size_t)k2 * kNR + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kMR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[(size_t)k2 * kMR + i]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  const __mmask16 m0 = first_lanes(cols), m1 = first_lanes(cols - 16);
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (st.bias) bias0 = _mm512_maskz_loadu_ps(m0, st.bias), bias1 = _mm512_maskz_loadu_ps(m1, st.bias + 16);
#pragma GCC unroll 12
  for (int i = 0; i < kMR; ++i) {
    if (i >= rows) break;
    float* ci = c + (size_t)i * ldc;
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if (st.add) v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ci)), v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ci + 16));
    if (st.bias) v0 = _mm512_add_ps(v0, bias0), v1 = _mm512_add_ps(v1, bias1);
    if (st.residual) {
      const float* ri = st.residual + (size_t)i * ldc;
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, ri)), v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, ri + 16));
    }
    _mm512_mask_storeu_ps(ci, m0, v0);
    _mm512_mask_storeu_ps(ci + 16, m1, v1);
  }
}

}  // namespace

bool avx512_bf16_available(std::string* why) {
  static std::once_flag once;
  static bool ok = false;
  static std::string reason;
  std::call_once(once, [] {
    // the compiler's runtime reads cpuid and reports AVX-512 features only where the OS enables
    // their register state (XCR0), as gemm.cc's and gemm_amx.cc's checks rely on
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512bf16")) {
      reason = "this CPU (or its OS) has no usable AVX512-BF16 (AMD Zen 4 or newer and Intel Cooper Lake have it)";
      return;
    }
    ok = true;
  });
  if (why) *why = reason;
  return ok;
}

void gemm_avx512_bf16(const GemmParams& p) {
  std::string why;
  if (!avx512_bf16_available(&why)) throw std::runtime_error("bf16 GEMM: " + why);
  const int kpairs = (p.K + 1) / 2;
  const int row_slivers = (p.M + kMR - 1) / kMR, col_slivers = (p.N + kNR - 1) / kNR;
  thread_local std::vector<uint32_t> a_buf, b_buf;  // the caller's: shared by the team below
  uint32_t* a_pack = aligned_scratch(a_buf, (size_t)row_slivers * kpairs * kMR);
  uint32_t* b_pack = aligned_scratch(b_buf, (size_t)col_slivers * kpairs * kNR);  // slivers 128-byte multiples: aligned
  const Operand a{p.A, p.lda, !p.trans_a, p.M, p.K}, b{p.B, p.ldb, p.trans_b, p.N, p.K};
  const int kc_max = split_size(kpairs, kKC2);
  const int panel_slivers = split_size(col_slivers, kNC / kNR);

#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int s = 0; s < row_slivers; ++s) pack_sliver(a, s * kMR, kMR, kpairs, a_pack + (size_t)s * kpairs * kMR);
#pragma omp for schedule(static)
    for (int s = 0; s < col_slivers; ++s) pack_sliver(b, s * kNR, kNR, kpairs, b_pack + (size_t)s * kpairs * kNR);
    // (implicit barrier: both operands packed; from here each thread writes only its own tiles)

    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
    for (int s0 = 0; s0 < col_slivers; s0 += panel_slivers) {
      const int ns = std::min(panel_slivers, col_slivers - s0);
      // this thread's tiles of the panel, row-major over (row sliver, column sliver): whole row
      // slivers when there are enough (its A sliver stays in L1 across the panel), else tiles
      const bool by_rows = row_slivers >= 4 * nthreads;
      const long units = by_rows ? row_slivers : (long)row_slivers * ns;
      const long u0 = units * tid / nthreads, u1 = units * (tid + 1) / nthreads;
      const long t0 = by_rows ? u0 * ns : u0, t1 = by_rows ? u1 * ns : u1;
      for (int k0 = 0; k0 < kpairs; k0 += kc_max) {
        const int kc = std::min(kc_max, kpairs - k0);
        const bool last = k0 + kc >= kpairs;
        for (long t = t0; t < t1; ++t) {
          const int is = (int)(t / ns), js = s0 + (int)(t % ns);
          const int i0 = is * kMR, j0 = js * kNR;
          const int rows = std::min(kMR, p.M - i0), cols = std::min(kNR, p.N - j0);
          float* c = p.C + (size_t)i0 * p.ldc + j0;
          TileStore st;
          st.add = p.accumulate || k0 > 0;
          if (last) {
            st.bias = p.bias ? p.bias + j0 : nullptr;
            st.residual = p.residual ? p.residual + (size_t)i0 * p.ldc + j0 : nullptr;
          }
          // the store's cold operands, fetched while the micro-kernel runs (as in the fp32 path)
          for (int i = 0; i < rows; ++i)
            for (int jj = 0; jj < cols; jj += 16) {
              const size_t at = (size_t)(i0 + i) * p.ldc + j0 + jj;
              __builtin_prefetch(p.C + at, 1);
              if (!last) continue;
              if (p.residual) __builtin_prefetch(p.residual + at);
              if (p.epilogue_in) __builtin_prefetch(p.epilogue_in + at);
              if (p.epilogue_out) __builtin_prefetch(p.epilogue_out + at, 1);
            }
          micro_bf16(kc, a_pack + ((size_t)is * kpairs + k0) * kMR, b_pack + ((size_t)js * kpairs + k0) * kNR, c, p.ldc,
                     rows, cols, st);
          if (last && p.tile_epilogue) p.tile_epilogue(p, i0, rows, j0, cols);
        }
      }
    }
  }
}

}  // namespace emae::cpu

#else  // !EMAE_HAVE_AVX512BF16

#include <stdexcept>

namespace emae::cpu {

bool avx512_bf16_available(std::string* why) {
  if (why) *why = "this build has no AVX512-BF16 support (it needs x86-64 and GCC >= 11 or Clang >= 12)";
  return false;
}

void gemm_avx512_bf16(const GemmParams&) {
  throw std::runtime_error("bf16 GEMM: this build has no AVX512-BF16 support");
}

}  // namespace emae::cpu

#endif  // EMAE_HAVE_AVX512BF16
