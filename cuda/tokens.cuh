// Patches, tokens and parts, as in native/cpu/ops.cc. With S = B·K sequences (the activation
// arguments cols, emb, demb, y, dy stored as float or bf16; images, target, x, z, dx, dz, dcls,
// dmask fp32, and the sums dcls, dmask in the fp32 order of today):
//   gather_visible_patches: images (B, C, H, W), perm (B, N) → cols (S·V, C·p·p) in conv order (c, row, col)
//   patchify_target:        images → target (B, N, P) in (row, col, channel) order, per-patch normalized if norm_pix
//   encoder_tokens:         x (S, 1+V, D) = [cls + pos[0]; emb + pos[1 + perm]]         (backward: demb =, dcls +=)
//   decoder_tokens:         z (S, 1+N, Dd) = y at visible positions, mask_token elsewhere, + dpos
//                           (backward: dy =, dmask += Σ over masked rows)
// position_of (B, N): the index of patch n in row b of perm, computed once per step by
// inverse_permutation and shared by the decoder backward and the loss.
#pragma once
#include "core/backend.h"
#include "core/elementwise.h"
#include "cuda/common.cuh"

namespace emae::cuda {

static __global__ void inverse_permutation_kernel(int32_t* __restrict__ position_of, const int32_t* __restrict__ perm, int B,
                                           int N) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * N) return;
  const int b = i / N;
  position_of[(size_t)b * N + perm[i]] = i % N;
}

// The element bodies of the grid-stride kernels below, host-callable for the CPU emulation
// (cuda/dev/elementwise_bf16_emulate.cu). T: the storage of the activation argument (float or
// bf16), read as fp32 and stored rounded; the residual stream (x, z, dx, dz) is fp32.

// cols element idx of (S·V, P), P = C·p·p in conv order (c, row, col)
template <class T>
__host__ __device__ __forceinline__ void gather_visible_patches_element(T* __restrict__ cols,
                                                                        const float* __restrict__ images,
                                                                        const int32_t* __restrict__ perm,
                                                                        const PartGeometry& g, long long idx) {
  const int p = g.patch, C = g.channels, HW = g.image, V = g.visible, K = g.parts;
  const int P = p * p * C;
  const long long t = idx / P;
  const int e = (int)(idx % P);
  const int c = e / (p * p), i = (e / p) % p, j = e % p;
  const int b = (int)(t / (K * V)), kv = (int)(t % (K * V));
  const int n = perm[(size_t)b * g.num_patches + kv];
  const int gy = n / g.grid, gx = n % g.grid;
  cols[idx] = store_as<T>(images[(((size_t)b * C + c) * HW + gy * p + i) * HW + gx * p + j]);
}

// x element idx of (S, 1+V, D)
template <class T>
__host__ __device__ __forceinline__ void encoder_tokens_forward_element(float* __restrict__ x,
                                                                        const T* __restrict__ emb,
                                                                        const float* __restrict__ cls,
                                                                        const float* __restrict__ pos,
                                                                        const int32_t* __restrict__ perm,
                                                                        const PartGeometry& g, int D, long long idx) {
  const int K = g.parts, V = g.visible, T1 = 1 + V;
  const int d = (int)(idx % D);
  const long long row = idx / D;
  const int tok = (int)(row % T1);
  const long long bk = row / T1;
  if (tok == 0) {
    x[idx] = cls[d] + pos[d];
  } else {
    const int b = (int)(bk / K), k = (int)(bk % K);
    const int n = perm[(size_t)b * g.num_patches + k * V + tok - 1];
    x[idx] = load_f32(emb[(bk * V + tok - 1) * D + d]) + pos[(size_t)(1 + n) * D + d];
  }
}

// demb element idx of (S·V, D)
template <class T>
__host__ __device__ __forceinline__ void encoder_tokens_backward_element(T* __restrict__ demb,
                                                                         const float* __restrict__ dx,
                                                                         const PartGeometry& g, int D, long long idx) {
  const int V = g.visible, T1 = 1 + V;
  const int d = (int)(idx % D);
  const long long r = idx / D;  // (bk, v)
  const long long bk = r / V;
  const int v = (int)(r % V);
  demb[idx] = store_as<T>(dx[(bk * T1 + 1 + v) * D + d]);
}

// z element idx of (S, 1+N, Dd)
template <class T>
__host__ __device__ __forceinline__ void decoder_tokens_forward_element(float* __restrict__ z, const T* __restrict__ y,
                                                                        const float* __restrict__ mask_token,
                                                                        const float* __restrict__ dpos,
                                                                        const int32_t* __restrict__ position_of,
                                                                        const PartGeometry& g, int Dd, long long idx) {
  const int K = g.parts, V = g.visible, N = g.num_patches;
  const int d = (int)(idx % Dd);
  const long long row = idx / Dd;
  const int tok = (int)(row % (1 + N));
  const long long bk = row / (1 + N);
  float value;
  if (tok == 0) {
    value = load_f32(y[bk * (1 + V) * Dd + d]);
  } else {
    const int b = (int)(bk / K), k = (int)(bk % K);
    const int pos = position_of[(size_t)b * N + tok - 1];
    const bool visible = pos >= k * V && pos < (k + 1) * V;
    value = visible ? load_f32(y[(bk * (1 + V) + 1 + pos - k * V) * Dd + d]) : mask_token[d];
  }
  z[idx] = value + dpos[(size_t)tok * Dd + d];
}

// dy element idx of (S, 1+V, Dd): the cls row and the visible rows, gathered from dz
template <class T>
__host__ __device__ __forceinline__ void decoder_tokens_backward_element(T* __restrict__ dy,
                                                                         const float* __restrict__ dz,
                                                                         const int32_t* __restrict__ perm,
                                                                         const PartGeometry& g, int Dd, long long idx) {
  const int K = g.parts, V = g.visible, N = g.num_patches;
  const int d = (int)(idx % Dd);
  const long long row = idx / Dd;
  const int tok = (int)(row % (1 + V));
  const long long bk = row / (1 + V);
  int src = 0;
  if (tok > 0) {
    const int b = (int)(bk / K), k = (int)(bk % K);
    src = 1 + perm[(size_t)b * N + k * V + tok - 1];
  }
  dy[idx] = store_as<T>(dz[(bk * (1 + N) + src) * Dd + d]);
}

// dmask partial[chunk][d] = Σ over the masked rows of the chunk's sequences [s0, s1)
__host__ __device__ __forceinline__ float mask_token_grad_chunk(const float* __restrict__ dz,
                                                                const int32_t* __restrict__ position_of,
                                                                const PartGeometry& g, int Dd, int d, int s0, int s1) {
  const int K = g.parts, V = g.visible, N = g.num_patches;
  float acc = 0.f;
  for (int bk = s0; bk < s1; ++bk) {
    const int b = bk / K, k = bk % K;
    for (int n = 0; n < N; ++n) {
      const int pos = position_of[(size_t)b * N + n];
      if (pos >= k * V && pos < (k + 1) * V) continue;  // visible in this part: not a mask token
      acc += dz[((size_t)bk * (1 + N) + 1 + n) * Dd + d];
    }
  }
  return acc;
}

template <class T>
static __global__ void gather_visible_patches_kernel(T* __restrict__ cols, const float* __restrict__ images,
                                                     const int32_t* __restrict__ perm, PartGeometry g) {
  const int P = g.patch * g.patch * g.channels;
  const long long total = (long long)g.batch * g.parts * g.visible * P;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x)
    gather_visible_patches_element(cols, images, perm, g, idx);
}

// one warp per (b, n) patch
static __global__ void patchify_target_kernel(float* __restrict__ target, const float* __restrict__ images, PartGeometry g,
                                       bool norm_pix) {
  const int item = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int p = g.patch, C = g.channels, HW = g.image, N = g.num_patches;
  const int P = p * p * C;
  if (item >= g.batch * N) return;
  const int b = item / N, n = item % N;
  const int gy = n / g.grid, gx = n % g.grid;
  float* dst = target + (size_t)item * P;
  float sum = 0.f;
  for (int q = lane; q < P; q += 32) {
    const int c = q % C, j = (q / C) % p, i = q / (C * p);
    const float v = images[(((size_t)b * C + c) * HW + gy * p + i) * HW + gx * p + j];
    dst[q] = v;
    sum += v;
  }
  if (!norm_pix) return;
  const float m = warp_sum(sum) / P;
  float ss = 0.f;
  for (int q = lane; q < P; q += 32) ss += (dst[q] - m) * (dst[q] - m);
  const float s = normpix_rstd(warp_sum(ss), P);
  for (int q = lane; q < P; q += 32) dst[q] = (dst[q] - m) * s;
}

template <class T>
static __global__ void encoder_tokens_forward_kernel(float* __restrict__ x, const T* __restrict__ emb,
                                                     const float* __restrict__ cls, const float* __restrict__ pos,
                                                     const int32_t* __restrict__ perm, PartGeometry g, int D) {
  const long long total = (long long)g.batch * g.parts * (1 + g.visible) * D;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x)
    encoder_tokens_forward_element(x, emb, cls, pos, perm, g, D, idx);
}

template <class T>
static __global__ void encoder_tokens_backward_kernel(T* __restrict__ demb, const float* __restrict__ dx, PartGeometry g,
                                                      int D) {
  const long long total = (long long)g.batch * g.parts * g.visible * D;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x)
    encoder_tokens_backward_element(demb, dx, g, D, idx);
}

template <class T>
static __global__ void decoder_tokens_forward_kernel(float* __restrict__ z, const T* __restrict__ y,
                                                     const float* __restrict__ mask_token,
                                                     const float* __restrict__ dpos,
                                                     const int32_t* __restrict__ position_of, PartGeometry g, int Dd) {
  const long long total = (long long)g.batch * g.parts * (1 + g.num_patches) * Dd;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x)
    decoder_tokens_forward_element(z, y, mask_token, dpos, position_of, g, Dd, idx);
}

template <class T>
static __global__ void decoder_tokens_backward_kernel(T* __restrict__ dy, const float* __restrict__ dz,
                                                      const int32_t* __restrict__ perm, PartGeometry g, int Dd) {
  const long long total = (long long)g.batch * g.parts * (1 + g.visible) * Dd;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x)
    decoder_tokens_backward_element(dy, dz, perm, g, Dd, idx);
}

// partial[chunk][d] = Σ over the masked rows of the chunk's sequences (deterministic)
static __global__ void mask_token_grad_partial_kernel(float* __restrict__ partial, const float* __restrict__ dz,
                                                      const int32_t* __restrict__ position_of, PartGeometry g, int Dd,
                                                      int seqs_per_chunk) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= Dd) return;
  const int S = g.batch * g.parts;
  const int s0 = blockIdx.y * seqs_per_chunk, s1 = min(S, s0 + seqs_per_chunk);
  partial[(size_t)blockIdx.y * Dd + d] = mask_token_grad_chunk(dz, position_of, g, Dd, d, s0, s1);
}

inline int elementwise_blocks(long long total) { return (int)std::min<long long>((total + 255) / 256, 65535LL * 16); }

inline void inverse_permutation(int32_t* position_of, const int32_t* perm, int B, int N, cudaStream_t stream) {
  inverse_permutation_kernel<<<ceil_div((long long)B * N, 256), 256, 0, stream>>>(position_of, perm, B, N);
  EMAE_CHECK_LAUNCH("inverse_permutation_kernel");
}

// T: float or bf16, the storage of the activation argument (cols, emb, demb, y, dy)
template <class T>
inline void gather_visible_patches(T* cols, const float* images, const int32_t* perm, const PartGeometry& g,
                                   cudaStream_t stream) {
  const long long total = (long long)g.batch * g.parts * g.visible * g.patch * g.patch * g.channels;
  if (total == 0) return;
  gather_visible_patches_kernel<<<elementwise_blocks(total), 256, 0, stream>>>(cols, images, perm, g);
  EMAE_CHECK_LAUNCH("gather_visible_patches_kernel");
}

inline void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix,
                            cudaStream_t stream) {
  const int items = g.batch * g.num_patches;
  patchify_target_kernel<<<ceil_div(items, 8), 256, 0, stream>>>(target, images, g, norm_pix);
  EMAE_CHECK_LAUNCH("patchify_target_kernel");
}

template <class T>
inline void encoder_tokens_forward(float* x, const T* emb, const float* cls, const float* pos, const int32_t* perm,
                                   const PartGeometry& g, int D, cudaStream_t stream) {
  const long long total = (long long)g.batch * g.parts * (1 + g.visible) * D;
  encoder_tokens_forward_kernel<<<elementwise_blocks(total), 256, 0, stream>>>(x, emb, cls, pos, perm, g, D);
  EMAE_CHECK_LAUNCH("encoder_tokens_forward_kernel");
}

// dcls (D) += Σ_seq dx[seq, 0]; scratch: column_sum_scratch_floats(S, D)
template <class T>
inline void encoder_tokens_backward(T* demb, float* dcls, const float* dx, const PartGeometry& g, int D,
                                    float* scratch, cudaStream_t stream) {
  const long long total = (long long)g.batch * g.parts * g.visible * D;
  encoder_tokens_backward_kernel<<<elementwise_blocks(total), 256, 0, stream>>>(demb, dx, g, D);
  EMAE_CHECK_LAUNCH("encoder_tokens_backward_kernel");
  column_sum_accumulate(dcls, dx, g.batch * g.parts, D, (long long)(1 + g.visible) * D, scratch, stream);
}

template <class T>
inline void decoder_tokens_forward(float* z, const T* y, const float* mask_token, const float* dpos,
                                   const int32_t* position_of, const PartGeometry& g, int Dd, cudaStream_t stream) {
  const long long total = (long long)g.batch * g.parts * (1 + g.num_patches) * Dd;
  decoder_tokens_forward_kernel<<<elementwise_blocks(total), 256, 0, stream>>>(z, y, mask_token, dpos, position_of, g, Dd);
  EMAE_CHECK_LAUNCH("decoder_tokens_forward_kernel");
}

constexpr int kMaskGradSeqsPerChunk = 2;  // many small chunks: the column sums need parallelism
inline size_t decoder_tokens_scratch_floats(const PartGeometry& g, int Dd) {
  return (size_t)ceil_div(g.batch * g.parts, kMaskGradSeqsPerChunk) * Dd;
}

template <class T>
inline void decoder_tokens_backward(T* dy, float* dmask, const float* dz, const int32_t* perm,
                                    const int32_t* position_of, const PartGeometry& g, int Dd, float* scratch,
                                    cudaStream_t stream) {
  const long long total = (long long)g.batch * g.parts * (1 + g.visible) * Dd;
  decoder_tokens_backward_kernel<<<elementwise_blocks(total), 256, 0, stream>>>(dy, dz, perm, g, Dd);
  EMAE_CHECK_LAUNCH("decoder_tokens_backward_kernel");
  const int chunks = ceil_div(g.batch * g.parts, kMaskGradSeqsPerChunk);
  mask_token_grad_partial_kernel<<<dim3(ceil_div(Dd, 128), chunks), 128, 0, stream>>>(scratch, dz, position_of, g, Dd,
                                                                                      kMaskGradSeqsPerChunk);
  EMAE_CHECK_LAUNCH("mask_token_grad_partial_kernel");
  reduce_chunks_kernel<<<ceil_div(Dd, 128), 128, 0, stream>>>(dmask, scratch, chunks, Dd);
  EMAE_CHECK_LAUNCH("reduce_chunks_kernel");
}

}  // namespace emae::cuda
