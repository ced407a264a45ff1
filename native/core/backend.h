// The Backend interface: every op the EMAE training step needs, on memory the backend owns.
// The model core (model.cc) is written against this interface only; cpu/ implements it on the
// host, cuda/ will implement it on the GPU. Conventions (as llm.c):
//   - row-major tensors; shapes in comments, e.g. inp (R, C) = R rows of C values;
//   - forward outputs are assigned (=); parameter gradients accumulate (+=);
//   - input gradients are assigned unless the name says accumulate.
// Activations that a backend may store in bf16 are passed as views (Act, ActIn: core/act.h) that
// carry their element type; the core asks activation_dtype() which type to plan them in. Everything
// passed as float* is fp32 on every backend: the residual stream, LayerNorm and softmax statistics,
// the losses and their inputs, parameters, gradients and optimizer state.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/act.h"  // Act, ActIn, DType
#include "core/elementwise.h"
#include "core/step_status.h"  // LossValues, StepStatus, decide_step

namespace emae {

// Geometry of the parallel parts, shared by the gather/scatter and loss ops.
struct PartGeometry {
  int batch;        // B
  int parts;        // K parts used this step
  int visible;      // V visible patches per part
  int num_patches;  // N
  int grid;         // patches per side (N = grid^2)
  int patch;        // p
  int channels;     // C
  int image;        // H = W
};

// One flat segment of the parameter buffer for the optimizer (a parameter tensor).
struct ParamSegment {
  size_t offset;          // in floats
  size_t size;            // in floats
  bool decay;             // weight decay applies
  double lr_scale = 1.0;  // AdamW's lr multiplier: the segment steps at segment_lr(s.lr, lr_scale)
                          // (elementwise.h); fine-tuning's layer-wise lr decay, 1 in pretraining
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- precision ---------------------------------------------------------------------------
  // The element type of the activations the core may store narrow (blocks.h lists them: LayerNorm
  // outputs, qkv, the attention output, fc1 and its GELU, the patch columns, the embeddings before
  // the token ops, and the GEMM input gradients). The CPU backend answers fp32.
  virtual DType activation_dtype() const { return DType::kF32; }
  // kBF16: the GEMMs read a bf16 copy of the parameters (same layout as the fp32 master copy),
  // which the owner allocates, fills with convert_to_bf16 whenever it sets the parameters, and
  // hands to adamw, which writes it with every update. kF32: the GEMMs read the master weights.
  virtual DType weight_dtype() const { return DType::kF32; }
  // dst (n) = src (n) rounded to bf16 (nearest even), both in backend memory
  virtual void convert_to_bf16(uint16_t* dst, const float* src, size_t n) = 0;

  // ---- memory (bytes) --------------------------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;  // throws emae::OutOfMemory (a std::runtime_error)
  virtual void release(void* ptr) = 0;
  virtual void upload(void* dst, const void* host_src, size_t bytes) = 0;
  // As upload, for a step's inputs (images, permutations, targets: about the same bytes every
  // step). host_src may be reused on return either way, but a device backend may stage the bytes
  // in memory of its own and return before the copy ran, so a step need not wait for the device.
  virtual void upload_input(void* dst, const void* host_src, size_t bytes) { upload(dst, host_src, bytes); }
  virtual void download(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;

  // ---- linear layers -----------------------------------------------------------------------
  // out (R, N) = inp (R, K) · weight (N, K)ᵀ + bias (N) [+ residual (R, N)]; bias/residual may be null
  virtual void matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias,
                              const float* residual, int R, int K, int N) = 0;
  // dinp (R, K) = dout · weight (assigned; skipped when dinp is null)
  // dweight (N, K) += doutᵀ · inp, or = when assign_dweight (the weight's only contribution in a
  // step that does not accumulate micro-batches: the gradients need no zeroing first);
  // dbias (N) += Σ_rows dout (skipped when dbias is null)
  virtual void matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout,
                               ActIn inp, ActIn weight, int R, int K, int N, bool assign_dweight) = 0;

  // The MLP's GELU next to its matmuls. A backend may fuse them to save a pass over the (R, N)
  // activation; these defaults compose the plain ops.
  // pre (R, N) = inp (R, K) · weight (N, K)ᵀ + bias;  act (R, N) = gelu(pre)
  virtual void matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias,
                                   int R, int K, int N) {
    matmul_forward(pre, inp, weight, bias, nullptr, R, K, N);
    gelu_forward(act, pre, (size_t)R * N);
  }
  // dinp (R, K) = (dout · weight) ⊙ gelu'(gelu_inp (R, K)); dweight, dbias as in matmul_backward
  virtual void matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp,
                                    ActIn weight, ActIn gelu_inp, int R, int K, int N,
                                    bool assign_dweight) {
    matmul_backward(dinp, dweight, dbias, dout, inp, weight, R, K, N, assign_dweight);
    gelu_backward(dinp, gelu_inp, dinp, (size_t)R * K);
  }

  // ---- LayerNorm ---------------------------------------------------------------------------
  // out (R, C), mean (R), rstd (R)
  virtual void layernorm_forward(Act out, float* mean, float* rstd, const float* inp,
                                 const float* weight, const float* bias, int R, int C, float eps) = 0;
  // dinp (R, C) accumulates (+=); dweight, dbias (C) accumulate
  virtual void layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout,
                                  const float* inp, const float* weight, const float* mean,
                                  const float* rstd, int R, int C) = 0;

  // ---- GELU (exact) ------------------------------------------------------------------------
  virtual void gelu_forward(Act out, ActIn inp, size_t n) = 0;
  // dinp = gelu'(inp) * dout; dinp may alias dout
  virtual void gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) = 0;

  // ---- multi-head self-attention ------------------------------------------------------------
  // qkv (S, T, 3, H, dh) → out (S, T, H, dh); lse (S, H, T) saved for the backward.
  // Scores T×T are never stored.
  virtual void attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) = 0;
  // dqkv (S, T, 3·H·dh) assigned
  virtual void attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out,
                                  const float* lse, int S, int T, int H, int dh) = 0;

  // ---- patches, tokens, parts ----------------------------------------------------------------
  // images (B, C, H, W), perm (B, N) → cols (B·K·V, C·p·p): the visible patches of each part in
  // the conv-weight order (c, row, col), ready for the patch-embedding matmul.
  virtual void gather_visible_patches(Act cols, const float* images, const int32_t* perm,
                                      const PartGeometry& g) = 0;
  // images → target (B, N, P) in (row, col, channel) order; normalized per patch if norm_pix.
  virtual void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) = 0;
  // x (B·K, 1+V, D): row 0 = cls + pos[0]; row 1+v = emb (B·K·V, D) + pos[1 + perm[b, k·V+v]]
  virtual void encoder_tokens_forward(float* x, ActIn emb, const float* cls_token,
                                      const float* pos_embed, const int32_t* perm, const PartGeometry& g, int D) = 0;
  // demb (B·K·V, D) assigned; dcls (D) accumulates
  virtual void encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm,
                                       const PartGeometry& g, int D) = 0;
  // z (B·K, 1+N, Dd): row 0 = y[cls] + dpos[0]; visible n: y[1+v] + dpos[1+n]; masked: mask_token + dpos[1+n]
  virtual void decoder_tokens_forward(float* z, ActIn y, const float* mask_token,
                                      const float* dec_pos_embed, const int32_t* perm, const PartGeometry& g, int Dd) = 0;
  // dy (B·K, 1+V, Dd) assigned; dmask (Dd) accumulates
  virtual void decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm,
                                       const PartGeometry& g, int Dd) = 0;

  // ---- losses -------------------------------------------------------------------------------
  // pred (B·K, 1+N, P) (row 0 of each part is the dropped cls), target (B, N, P) fp32.
  // Writes dpred (same shape and type as pred; cls rows zero) for L = L_rec + lambda·L_con and the
  // loss values into *losses (backend memory: a StepStatus's; read back with download).
  virtual void loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target,
                                     const int32_t* perm, const PartGeometry& g, float lambda, bool l1) = 0;

  // ---- fine-tuning (core/classifier.cc, DESIGN.md §3b) ---------------------------------------
  // dst (C) += Σ_rows src (R, C), summed in a fixed order (the trainable pos_embed's gradient:
  // R sequences of C = T·D values)
  virtual void column_sum_accumulate(float* dst, const float* src, int R, int C) = 0;
  // pooled (S, D) from x (S, T, D): mean over tokens 1..T−1 when mean (global pool; the cls
  // token at row 0 excluded), else token 0 (the cls token)
  virtual void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) = 0;
  // dx (S, T, D) assigned: dpooled / (T − 1) on tokens 1..T−1 and 0 on token 0 when mean,
  // else dpooled on token 0 and 0 elsewhere
  virtual void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) = 0;
  // Drop path on a residual branch: out (S, n) = res + keep[s] · branch, keep (S) ∈ {0, 1/(1−p)}.
  // out may alias branch or res.
  virtual void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep,
                                       int S, size_t n) = 0;
  // out (S, n) = keep[s] · inp (S, n) (the branch's gradient under drop path); out may alias inp
  virtual void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) = 0;
  // Softmax cross-entropy of logits (B, C) against soft targets (B, C) (rows summing to 1),
  // mean over the batch, into *loss (backend memory: a StepStatus's losses.loss); writes
  // dlogits = (softmax − targets) / B.
  virtual void cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits,
                                              const float* targets, int B, int C) = 0;

  // ---- optimizer ---------------------------------------------------------------------------
  // The norm and scale read the segments' offset and size, AdamW also decay and lr_scale. A
  // device backend keeps a copy of the lists it was given (uploading one is a host sync), so a
  // model passes the same list to all three every step. None of them waits for the device.
  // Σ g² over the segments (trainable parameters), in double, into *norm_sq (backend memory: a
  // StepStatus's grad_norm_sq).
  virtual void grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) = 0;
  // data *= factor over the segments
  virtual void scale(float* data, const ParamSegment* segments, int count, float factor) = 0;
  // The optimizer update as decide_step(*status, clip_grad, check_loss) (step_status.h) says, the
  // status read where it lies (backend memory): refused → nothing changes, grads included; else
  // grads *= factor when clipping (they keep the clipped values), then one AdamW step
  // (adamw_update) of every element of every segment, at the segment's own learning rate
  // segment_lr(s.lr, segment.lr_scale) and with weight decay where segment.decay; s.lr itself is
  // the rate of a segment with lr_scale 1. Elements are independent: the segments' order does not
  // matter. params_bf16 (null unless weight_dtype() is bf16): the GEMMs' bf16 copy of params, set
  // to the new values rounded to bf16 over the segments by the same update (unchanged when refused).
  virtual void adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
                     const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status,
                     float clip_grad, bool check_loss) = 0;
};

// host (n floats) ← n elements of a view in backend memory: copied as they are when fp32, widened
// on the host when bf16 (a download, so a host sync)
inline void download_f32(Backend& backend, float* host, ActIn src, size_t n) {
  if (src.is_f32()) return backend.download(host, src.data, n * sizeof(float));
  std::vector<uint16_t> bits(n);
  backend.download(bits.data(), src.data, n * sizeof(uint16_t));
  for (size_t i = 0; i < n; ++i) host[i] = float_from_bf16(bits[i]);
}

}  // namespace emae
