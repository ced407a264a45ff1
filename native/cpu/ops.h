// CPU reference ops of the EMAE training step, each forward beside its backward.
// Templated on the scalar: float is what the CPU backend runs, double is what the
// finite-difference tests run (test_ops.cc). Shapes follow backend.h.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/backend.h"

namespace emae::cpu {

// out (R, N) = inp (R, K) · w (N, K)ᵀ + bias + residual
// bf16 (float only): the GEMMs' operands rounded to bf16, fp32 sums (gemm_bf16_kernel_name())
template <typename T>
void matmul_forward(T* out, const T* inp, const T* w, const T* bias, const T* residual, int R, int K, int N,
                    bool bf16 = false);
// dinp (R, K) = dout · w (assigned, optional); dw (N, K) += doutᵀ · inp; dbias (N) += Σ dout (optional)
template <typename T>
// assign_dw: dw = doutᵀ · inp instead of +=
void matmul_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, int R, int K, int N,
                     bool bf16 = false, bool assign_dw = false);

// pre (R, N) = inp · wᵀ + bias, act = gelu(pre) (the GELU fused into the GEMM's tiles for float)
template <typename T>
void matmul_gelu_forward(T* pre, T* act, const T* inp, const T* w, const T* bias, int R, int K, int N,
                         bool bf16 = false);
// matmul_backward with dinp (R, K) = (dout · w) ⊙ gelu'(gelu_inp)
template <typename T>
void matmul_backward_gelu(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w, const T* gelu_inp,
                          int R, int K, int N, bool bf16 = false, bool assign_dw = false);

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* w, const T* b, int R, int C, T eps);
template <typename T>
void layernorm_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const T* mean,
                        const T* rstd, int R, int C);

template <typename T> void gelu_forward(T* out, const T* inp, size_t n);
template <typename T> void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n);

template <typename T>
void attention_forward(T* out, T* lse, const T* qkv, int S, int T_, int H, int dh);
template <typename T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int S, int T_, int H, int dh);

template <typename T>
void gather_visible_patches(T* cols, const T* images, const int32_t* perm, const PartGeometry& g);
template <typename T>
void patchify_target(T* target, const T* images, const PartGeometry& g, bool norm_pix);

template <typename T>
void encoder_tokens_forward(T* x, const T* emb, const T* cls, const T* pos, const int32_t* perm,
                            const PartGeometry& g, int D);
template <typename T>
void encoder_tokens_backward(T* demb, T* dcls, const T* dx, const int32_t* perm, const PartGeometry& g, int D);
template <typename T>
void decoder_tokens_forward(T* z, const T* y, const T* mask_token, const T* dpos, const int32_t* perm,
                            const PartGeometry& g, int Dd);
template <typename T>
void decoder_tokens_backward(T* dy, T* dmask, const T* dz, const int32_t* perm, const PartGeometry& g, int Dd);

template <typename T>
LossValues loss_forward_backward(T* dpred, const T* pred, const T* target, const int32_t* perm,
                                 const PartGeometry& g, T lambda, bool l1);

// dst (C) += Σ_rows src (R, C), summed in a fixed order (deterministic for any thread count)
template <typename T> void column_sum_accumulate(T* dst, const T* src, int R, int C);

}  // namespace emae::cpu
