// 16 × 16 (AVX-512) and 8 × 8 (AVX) transposes of 32-bit elements in registers, shared by the
// GEMM packers.
#pragma once
#include <immintrin.h>

#include <cstddef>

namespace emae::cpu {

// (GCC 12 warns that the intrinsics' internal _mm512_undefined_ps() is uninitialized: noise.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Transpose 16 rows of 16 floats (src rows at ld) into dst rows at ldd: dst[c][r] = src[r][c].
// unpack → 2×2 blocks, shuffle_ps → 4×4 blocks per 128-bit lane, shuffle_f32x4 → lanes.
__attribute__((target("avx512f"))) inline void transpose16x16(const float* src, int ld, float* dst, int ldd) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + (size_t)i * ld);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);      // lane: a0 b0 a1 b1
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);  // lane: a2 b2 a3 b3
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + e], lane L: element 4L + e of rows 4i .. 4i+3
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int e = 0; e < 4; ++e) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 x1 = _mm512_shuffle_f32x4(u[e], u[4 + e], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 y0 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 y1 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_storeu_ps(dst + (size_t)(0 + e) * ldd, _mm512_shuffle_f32x4(x0, y0, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (size_t)(8 + e) * ldd, _mm512_shuffle_f32x4(x0, y0, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(dst + (size_t)(4 + e) * ldd, _mm512_shuffle_f32x4(x1, y1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_storeu_ps(dst + (size_t)(12 + e) * ldd, _mm512_shuffle_f32x4(x1, y1, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

// Transpose 8 rows of 8 floats (src rows at ld) into dst rows at ldd: dst[c][r] = src[r][c].
// unpack → 2×2 blocks, shuffle_ps → 4×4 blocks per 128-bit lane, permute2f128 → lanes.
__attribute__((target("avx"))) inline void transpose8x8(const float* src, int ld, float* dst, int ldd) {
  __m256 r[8], t[8], u[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + (size_t)i * ld);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {  // u[4i + e], lane L: element 4L + e of rows 4i .. 4i+3
    u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int e = 0; e < 4; ++e) {
    _mm256_storeu_ps(dst + (size_t)e * ldd, _mm256_permute2f128_ps(u[e], u[4 + e], 0x20));
    _mm256_storeu_ps(dst + (size_t)(4 + e) * ldd, _mm256_permute2f128_ps(u[e], u[4 + e], 0x31));
  }
}
#pragma GCC diagnostic pop

}  // namespace emae::cpu
