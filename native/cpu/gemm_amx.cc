// AMX bf16 GEMM (see gemm_amx.h). Invariants:
//   - op(A) is packed whole into bf16 rows (M_pad × K_pad, rows of 32-k chunks, zero padded) and
//     op(B) into VNNI pairs per 32-column sliver ([K_pad/2][32][2]), each once per call;
//   - a C tile of 32 × 32 is four 16 × 16 fp32 AMX tiles accumulated over all of K in the tile
//     registers, then stored once through the same epilogue as the fp32 path (C, bias, residual,
//     tile_epilogue): every output element sums K in one fixed order, whatever the thread count.
#include "cpu/gemm_amx.h"

// AMX and AVX512-BF16 intrinsics need GCC >= 11 or Clang >= 12, and the tile permission is a
// Linux call; elsewhere the stubs at the bottom are built (bf16 then reports itself unavailable).
#if defined(__linux__) && defined(__x86_64__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define EMAE_HAVE_AMX 1
#else
#define EMAE_HAVE_AMX 0
#endif

#if EMAE_HAVE_AMX

#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cpu/gemm_util.h"
#include "cpu/transpose.h"

namespace emae::cpu {
namespace {

constexpr int kTile = 16;           // AMX tile: 16 rows × 64 bytes
constexpr int kKStep = 32;          // bf16 per tile row: the depth of one tile multiply
constexpr int kMB = 32, kNB = 32;   // C block per micro-kernel: 2 × 2 tiles
static_assert(kMB == 2 * kTile && kNB == 2 * kTile, "the micro-kernel holds 2 × 2 C tiles");

constexpr long kArchReqXcompPerm = 0x1023;
constexpr long kXfeatureXtiledata = 18;

struct __attribute__((packed)) TileConfig {  // the palette-1 layout of ldtilecfg
  uint8_t palette, start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
static_assert(sizeof(TileConfig) == 64, "ldtilecfg reads 64 bytes");

// tmm0-3: C (16 × 16 fp32), tmm4-5: A (16 rows × 32 bf16), tmm6-7: B (16 k-pairs × 16 × 2 bf16);
// every other byte zero, or ldtilecfg faults. A constant in memory: GCC 12 does not treat
// _tile_loadconfig as reading its operand and dropped the stores to a local one.
alignas(64) const TileConfig kTileConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target("amx-tile"))) void configure_tiles() { _tile_loadconfig(&kTileConfig); }
__attribute__((target("amx-tile"))) void release_tiles() { _tile_release(); }

// c (32 × 32 fp32, contiguous) = Σ over the k-pairs [0, kpairs) (a multiple of 16) of the packed
// operands: a = 32 bf16 rows at a_stride bytes, b = [kpairs][32][2] bf16 (VNNI pairs).
__attribute__((target("amx-tile,amx-bf16"))) void micro_amx(int kpairs, const uint16_t* a, int a_stride,
                                                             const uint16_t* b, float* c) {
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int k2 = 0; k2 < kpairs; k2 += kTile) {
    const uint16_t* ak = a + k2 * 2;  // 32 bf16 of each row from k = 2·k2
    const uint16_t* bk = b + (size_t)k2 * kNB * 2;
    _tile_loadd(4, ak, a_stride);
    _tile_loadd(5, reinterpret_cast<const char*>(ak) + (size_t)kTile * a_stride, a_stride);
    _tile_loadd(6, bk, kNB * 4);
    _tile_loadd(7, bk + kTile * 2, kNB * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, kNB * 4);
  _tile_stored(1, c + kTile, kNB * 4);
  _tile_stored(2, c + kTile * kNB, kNB * 4);
  _tile_stored(3, c + kTile * kNB + kTile, kNB * 4);
}

using gemm_util::aligned_scratch;


// 16 floats → 16 bf16, rounded as to_bf16 (VCVTNEPS2BF16: nearest even, denormals to zero).
__attribute__((target("avx512f,avx512bf16"))) inline __m256i cvt16(const float* src) {
  return (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src));
}

// Rows [i0, i0 + 16) of op(A) → bf16 rows of K_pad in a_pack (past M or K: zero).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pack_a_rows(const GemmParams& p, int i0, int K_pad,
                                                                         uint16_t* a_pack) {
  const int rows = std::max(0, std::min(16, p.M - i0));
  int k = 0;
  if (rows == 16) {
    if (!p.trans_a) {
      for (int r = 0; r < 16; ++r) {
        const float* src = p.A + (size_t)(i0 + r) * p.lda;
        uint16_t* dst = a_pack + (size_t)(i0 + r) * K_pad;
        for (int kk = 0; kk + 16 <= p.K; kk += 16) _mm256_storeu_si256((__m256i*)(dst + kk), cvt16(src + kk));
      }
    } else {  // op(A) rows are A's columns: 16 × 16 blocks through the register transpose
      alignas(64) float block[16 * 16];
      for (int kk = 0; kk + 16 <= p.K; kk += 16) {
        transpose16x16(p.A + (size_t)kk * p.lda + i0, p.lda, block, 16);
        for (int r = 0; r < 16; ++r)
          _mm256_storeu_si256((__m256i*)(a_pack + (size_t)(i0 + r) * K_pad + kk), cvt16(block + r * 16));
      }
    }
    k = p.K / 16 * 16;
  }
  for (int r = 0; r < 16; ++r) {  // the rest, element by element
    uint16_t* dst = a_pack + (size_t)(i0 + r) * K_pad;
    const bool live = r < rows;
    for (int kk = live ? k : 0; kk < K_pad; ++kk) {
      float v = 0.f;
      if (live && kk < p.K) v = p.trans_a ? p.A[(size_t)kk * p.lda + i0 + r] : p.A[(size_t)(i0 + r) * p.lda + kk];
      dst[kk] = to_bf16(v);
    }
  }
}

// Column block jb of op(B) (kNB columns) → [K_pad / 2][kNB][2] bf16 (past N or K: zero).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pack_b_block(const GemmParams& p, int jb, int K_pad,
                                                                          uint16_t* dst) {
  const int j0 = jb * kNB, kfull = p.K / 32 * 32;  // whole 32-k (16-pair) steps
  bool done[2] = {false, false};                   // each 16-column half fully packed by vectors
  for (int h = 0; h < 2; ++h) {
    const int j = j0 + h * 16;
    if (j + 16 > p.N) continue;
    uint32_t* out = reinterpret_cast<uint32_t*>(dst) + h * 16;  // pair (k2, column) at out[k2·kNB + c]
    if (!p.trans_b) {
      // rows k and k+1 → 32 bf16 (row k low), interleaved into (k, k+1) pairs per column
      const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                  23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
      for (int k = 0; k < kfull; k += 2) {
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(p.B + (size_t)(k + 1) * p.ldb + j),
                                                          _mm512_loadu_ps(p.B + (size_t)k * p.ldb + j));
        _mm512_storeu_si512(out + (size_t)(k / 2) * kNB, _mm512_permutexvar_epi16(interleave, both));
      }
    } else {
      // W rows (columns of op(B)) hold the pairs already: 32 k → 16 pairs per row, then a 16 × 16
      // transpose of the 32-bit pairs puts the columns side by side
      alignas(64) uint32_t block[16 * 16], tblock[16 * 16];
      for (int k = 0; k < kfull; k += 32) {
        for (int c = 0; c < 16; ++c) {
          const float* row = p.B + (size_t)(j + c) * p.ldb + k;
          _mm512_store_si512(block + c * 16, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + 16), _mm512_loadu_ps(row)));
        }
        transpose16x16(reinterpret_cast<const float*>(block), 16, reinterpret_cast<float*>(tblock), 16);
        for (int r = 0; r < 16; ++r) _mm512_storeu_si512(out + (size_t)(k / 2 + r) * kNB, _mm512_load_si512(tblock + r * 16));
      }
    }
    done[h] = true;
  }
  // the rest, element by element: from the first pair past the vector part when both halves had one
  for (int k2 = done[0] && done[1] ? kfull / 2 : 0; k2 < K_pad / 2; ++k2)
    for (int jj = 0; jj < kNB; ++jj) {
      if (done[jj / 16] && 2 * k2 < kfull) continue;
      for (int e = 0; e < 2; ++e) {
        const int k = 2 * k2 + e, j = j0 + jj;
        float v = 0.f;
        if (k < p.K && j < p.N) v = p.trans_b ? p.B[(size_t)j * p.ldb + k] : p.B[(size_t)k * p.ldb + j];
        dst[((size_t)k2 * kNB + jj) * 2 + e] = to_bf16(v);
      }
    }
}


// C tile = acc [+ C] [+ bias] [+ residual], in the fp32 path's order; 16 columns per vector,
// masked at the right edge.
__attribute__((target("avx512f"))) void store_tile(const GemmParams& p, const float* tile, int i0, int rows, int j0,
                                                   int cols) {
  for (int jj = 0; jj < cols; jj += 16) {
    const __mmask16 m = (__mmask16)(cols - jj >= 16 ? 0xffff : (1u << (cols - jj)) - 1);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(m, p.bias + j0 + jj) : _mm512_setzero_ps();
    for (int i = 0; i < rows; ++i) {
      float* c = p.C + (size_t)(i0 + i) * p.ldc + j0 + jj;
      __m512 v = _mm512_load_ps(tile + i * kNB + jj);
      if (p.accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
      if (p.bias) v = _mm512_add_ps(v, bias);
      if (p.residual) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, p.residual + (size_t)(i0 + i) * p.ldc + j0 + jj));
      _mm512_mask_storeu_ps(c, m, v);
    }
  }
}

}  // namespace

bool amx_bf16_available(std::string* why) {
  static std::once_flag once;
  static bool ok = false;
  static std::string reason;
  std::call_once(once, [] {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("amx-tile") || !__builtin_cpu_supports("amx-bf16")) {
      reason = "this CPU has no AMX-BF16 (Intel Sapphire Rapids or newer has it)";
      return;
    }
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
      reason = std::string("the kernel refused the AMX tile state (arch_prctl: ") + std::strerror(errno) + ")";
      return;
    }
    ok = true;
  });
  if (why) *why = reason;
  return ok;
}

void gemm_amx_bf16(const GemmParams& p) {
  std::string why;
  if (!amx_bf16_available(&why)) throw std::runtime_error("bf16 GEMM: " + why);
  const int K_pad = (p.K + kKStep - 1) / kKStep * kKStep, kpairs = K_pad / 2;
  const int row_blocks = (p.M + kMB - 1) / kMB, col_blocks = (p.N + kNB - 1) / kNB;
  thread_local std::vector<uint16_t> a_buf, b_buf;  // the caller's: shared by the team below
  uint16_t* a_pack = aligned_scratch(a_buf, (size_t)row_blocks * kMB * K_pad);
  uint16_t* b_pack = aligned_scratch(b_buf, (size_t)col_blocks * kNB * K_pad);
  const int a_stride = K_pad * 2;  // bytes per packed A row

#pragma omp parallel
  {
    // op(A) (M, K) → bf16 rows of K_pad (rows past M zero); op(B) → VNNI pairs per column block
#pragma omp for schedule(static)
    for (int g = 0; g < row_blocks * (kMB / 16); ++g) pack_a_rows(p, g * 16, K_pad, a_pack);
#pragma omp for schedule(static)
    for (int jb = 0; jb < col_blocks; ++jb) pack_b_block(p, jb, K_pad, b_pack + (size_t)jb * kNB * K_pad);
    // (implicit barrier: both operands packed)

    configure_tiles();
    alignas(64) float tile[kMB * kNB];
    const long tiles = (long)row_blocks * col_blocks;
    const int nthreads = omp_get_num_threads(), tid = omp_get_thread_num();
    for (long t = tiles * tid / nthreads; t < tiles * (tid + 1) / nthreads; ++t) {
      const int ib = (int)(t / col_blocks), jb = (int)(t % col_blocks);
      const int i0 = ib * kMB, j0 = jb * kNB;
      const int rows = std::min(kMB, p.M - i0), cols = std::min(kNB, p.N - j0);
      // the store's cold operands, fetched while the tiles multiply (as in the fp32 path)
      for (int i = 0; i < rows; ++i)
        for (int jj = 0; jj < cols; jj += 16) {
          const size_t at = (size_t)(i0 + i) * p.ldc + j0 + jj;
          __builtin_prefetch(p.C + at, 1);
          if (p.residual) __builtin_prefetch(p.residual + at);
          if (p.epilogue_in) __builtin_prefetch(p.epilogue_in + at);
          if (p.epilogue_out) __builtin_prefetch(p.epilogue_out + at, 1);
        }
      micro_amx(kpairs, a_pack + (size_t)ib * kMB * K_pad, a_stride, b_pack + (size_t)jb * kNB * K_pad, tile);
      store_tile(p, tile, i0, rows, j0, cols);
      if (p.tile_epilogue) p.tile_epilogue(p, i0, rows, j0, cols);
    }
    release_tiles();
  }
}

}  // namespace emae::cpu

#else  // !EMAE_HAVE_AMX

#include <stdexcept>

namespace emae::cpu {

bool amx_bf16_available(std::string* why) {
  if (why) *why = "this build has no AMX support (it needs Linux on x86-64 and GCC >= 11 or Clang >= 12)";
  return false;
}

void gemm_amx_bf16(const GemmParams&) {
  throw std::runtime_error("bf16 GEMM: this build has no AMX support");
}

}  // namespace emae::cpu

#endif  // EMAE_HAVE_AMX
