// Packed, cache-blocked fp32 GEMM (see gemm.h). Loop order (per output tile owned by a thread):
//   for kc-block: pack B panel (KC × NC) and A block (MC × KC), then micro-kernels over
//   MR × NR sub-tiles. Packed panels are zero-padded to MR/NR so the micro-kernels need no edge
//   cases; partial edge tiles go through a small stack buffer.
#include "cpu/gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace emae::cpu {
namespace {

constexpr int kMC = 96;   // rows of A per block (multiple of every MR)
constexpr int kKC = 256;  // depth per block
constexpr int kNC = 256;  // columns of B per panel (multiple of every NR)
static_assert(kMC % 12 == 0 && kMC % 6 == 0 && kMC % 4 == 0, "kMC must be a multiple of each MR");
static_assert(kNC % 32 == 0 && kNC % 16 == 0 && kNC % 8 == 0, "kNC must be a multiple of each NR");

// Micro-kernel: c (MR, NR) tile at ldc (= or +=) Σ_k a[k·MR + i] · b[k·NR + j].
using MicroKernel = void (*)(int kc, const float* a, const float* b, float* c, int ldc, bool add);

struct KernelInfo {
  MicroKernel fn;
  int mr, nr;
  const char* name;
};

__attribute__((target("avx512f"))) void micro_avx512(int kc, const float* a, const float* b, float* c,
                                                     int ldc, bool add) {
  constexpr int MR = 12;
  __m512 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * 32);
    const __m512 b1 = _mm512_load_ps(b + k * 32 + 16);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[k * MR + i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + (size_t)i * ldc;
    if (add) {
      acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
      acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
    }
    _mm512_storeu_ps(ci, acc[i][0]);
    _mm512_storeu_ps(ci + 16, acc[i][1]);
  }
}

__attribute__((target("avx2,fma"))) void micro_avx2(int kc, const float* a, const float* b, float* c,
                                                    int ldc, bool add) {
  constexpr int MR = 6;
  __m256 acc[MR][2];
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(b + k * 16);
    const __m256 b1 = _mm256_load_ps(b + k * 16 + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + k * MR + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + (size_t)i * ldc;
    if (add) {
      acc[i][0] = _mm256_add_ps(acc[i][0], _mm256_loadu_ps(ci));
      acc[i][1] = _mm256_add_ps(acc[i][1], _mm256_loadu_ps(ci + 8));
    }
    _mm256_storeu_ps(ci, acc[i][0]);
    _mm256_storeu_ps(ci + 8, acc[i][1]);
  }
}

void micro_generic(int kc, const float* a, const float* b, float* c, int ldc, bool add) {
  constexpr int MR = 4, NR = 8;
  float acc[MR][NR] = {};
  for (int k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[k * MR + i] * b[k * NR + j];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[(size_t)i * ldc + j] = (add ? c[(size_t)i * ldc + j] : 0.f) + acc[i][j];
}

KernelInfo select_kernel() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return {micro_avx512, 12, 32, "avx512"};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {micro_avx2, 6, 16, "avx2"};
  return {micro_generic, 4, 8, "generic"};
}

const KernelInfo& kernel() {
  static const KernelInfo info = select_kernel();
  return info;
}

// Pack op(A)[i0 .. i0+mc, k0 .. k0+kc) as mc/MR slivers of (kc, MR), zero-padded rows.
void pack_a(const GemmParams& p, int i0, int mc, int k0, int kc, int MR, float* out) {
  for (int is = 0; is < mc; is += MR) {
    const int rows = std::min(MR, mc - is);
    float* dst = out + (size_t)is * kc;
    if (!p.trans_a) {
      // k outer so the writes are contiguous; the MR row streams are read sequentially
      const float* src[12];
      for (int r = 0; r < rows; ++r) src[r] = p.A + (size_t)(i0 + is + r) * p.lda + k0;
      if (rows == MR) {
        for (int k = 0; k < kc; ++k)
          for (int r = 0; r < MR; ++r) dst[k * MR + r] = src[r][k];
      } else {
        for (int k = 0; k < kc; ++k)
          for (int r = 0; r < rows; ++r) dst[k * MR + r] = src[r][k];
      }
    } else {
      for (int k = 0; k < kc; ++k) {
        const float* src = p.A + (size_t)(k0 + k) * p.lda + i0 + is;
        for (int r = 0; r < rows; ++r) dst[k * MR + r] = src[r];
      }
    }
    for (int r = rows; r < MR; ++r)
      for (int k = 0; k < kc; ++k) dst[k * MR + r] = 0.f;
  }
}

// Pack op(B)[k0 .. k0+kc, j0 .. j0+nc) as nc/NR slivers of (kc, NR), zero-padded columns.
void pack_b(const GemmParams& p, int k0, int kc, int j0, int nc, int NR, float* out) {
  for (int js = 0; js < nc; js += NR) {
    const int cols = std::min(NR, nc - js);
    float* dst = out + (size_t)js * kc;
    if (!p.trans_b) {
      for (int k = 0; k < kc; ++k) {
        const float* src = p.B + (size_t)(k0 + k) * p.ldb + j0 + js;
        float* d = dst + (size_t)k * NR;
        for (int c = 0; c < cols; ++c) d[c] = src[c];
        for (int c = cols; c < NR; ++c) d[c] = 0.f;
      }
    } else {
      for (int c = 0; c < cols; ++c) {
        const float* src = p.B + (size_t)(j0 + js + c) * p.ldb + k0;
        for (int k = 0; k < kc; ++k) dst[(size_t)k * NR + c] = src[k];
      }
      for (int c = cols; c < NR; ++c)
        for (int k = 0; k < kc; ++k) dst[(size_t)k * NR + c] = 0.f;
    }
  }
}

float* aligned_scratch(std::vector<float>& v, size_t n) {
  if (v.size() < n + 16) v.resize(n + 16);
  auto addr = reinterpret_cast<uintptr_t>(v.data());
  return reinterpret_cast<float*>((addr + 63) & ~uintptr_t(63));
}

}  // namespace

const char* gemm_kernel_name() { return kernel().name; }

void gemm(const GemmParams& p) {
  if (p.M <= 0 || p.N <= 0) return;
  const KernelInfo& kinfo = kernel();
  const int MR = kinfo.mr, NR = kinfo.nr;
  const int blocks_m = (p.M + kMC - 1) / kMC;
  // B panels are packed once per (jc, kc) and shared by all threads; each thread packs its own
  // A blocks. Every C block belongs to one thread within a (jc, kc) step and the kc steps run in
  // order, so the summation order is fixed.
  thread_local std::vector<float> b_buf;
  float* b_pack = aligned_scratch(b_buf, (size_t)kKC * kNC);

#pragma omp parallel
  {
    thread_local std::vector<float> a_buf;
    float* a_pack = aligned_scratch(a_buf, (size_t)kMC * kKC);
    alignas(64) float edge[12 * 32];

    for (int j0 = 0; j0 < p.N; j0 += kNC) {
      const int nc = std::min(kNC, p.N - j0);
      const int slivers = (nc + NR - 1) / NR;
      if (p.K <= 0 && !p.accumulate) {
#pragma omp for schedule(static)
        for (int i = 0; i < p.M; ++i) std::memset(p.C + (size_t)i * p.ldc + j0, 0, sizeof(float) * nc);
      }
      for (int k0 = 0; k0 < p.K; k0 += kKC) {
        const int kc = std::min(kKC, p.K - k0);
        const bool add = p.accumulate || k0 > 0;
#pragma omp for schedule(static)
        for (int s = 0; s < slivers; ++s)
          pack_b(p, k0, kc, j0 + s * NR, std::min(NR, nc - s * NR), NR, b_pack + (size_t)s * NR * kc);
        // (implicit barrier: the panel is complete)
#pragma omp for schedule(static)
        for (int bm = 0; bm < blocks_m; ++bm) {
          const int i0 = bm * kMC, mc = std::min(kMC, p.M - i0);
          pack_a(p, i0, mc, k0, kc, MR, a_pack);
          float* c_block = p.C + (size_t)i0 * p.ldc + j0;
          for (int js = 0; js < nc; js += NR) {
            const int cols = std::min(NR, nc - js);
            const float* bp = b_pack + (size_t)js * kc;
            for (int is = 0; is < mc; is += MR) {
              const int rows = std::min(MR, mc - is);
              float* c = c_block + (size_t)is * p.ldc + js;
              const float* ap = a_pack + (size_t)is * kc;
              if (rows == MR && cols == NR) {
                kinfo.fn(kc, ap, bp, c, p.ldc, add);
              } else {
                kinfo.fn(kc, ap, bp, edge, NR, false);
                for (int i = 0; i < rows; ++i)
                  for (int j = 0; j < cols; ++j)
                    c[(size_t)i * p.ldc + j] = (add ? c[(size_t)i * p.ldc + j] : 0.f) + edge[i * NR + j];
              }
            }
          }
        }
        // (implicit barrier: nobody still reads the panel when the next one is packed)
      }
      if (p.bias || p.residual) {
#pragma omp for schedule(static)
        for (int i = 0; i < p.M; ++i) {
          float* c = p.C + (size_t)i * p.ldc + j0;
          if (p.bias)
            for (int j = 0; j < nc; ++j) c[j] += p.bias[j0 + j];
          if (p.residual) {
            const float* r = p.residual + (size_t)i * p.ldc + j0;
            for (int j = 0; j < nc; ++j) c[j] += r[j];
          }
        }
      }
    }
  }
}

}  // namespace emae::cpu
