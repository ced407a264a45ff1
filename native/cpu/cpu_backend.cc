// CPU implementation of the Backend interface: memory is host memory, every op forwards to the
// float instantiation of ops.h.
#include "cpu/cpu_backend.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/errors.h"
#include "cpu/classifier_ops.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "cpu/optim.h"

namespace emae::cpu {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(bool bf16_matmul) : bf16_(bf16_matmul) {}
  std::string name() const override {
    return std::string("cpu (") + (bf16_ ? gemm_bf16_kernel_name() : gemm_kernel_name()) + ")";
  }

  void convert_to_bf16(uint16_t* dst, const float* src, size_t n) override {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_from_float(src[i]);
  }

  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) & ~size_t(63));
    if (!p) throw OutOfMemory("cpu allocate", bytes);
    return p;
  }
  void release(void* ptr) override { std::free(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }

  // fp32 only: every view is read with .f32(), so a bf16 view is refused (std::logic_error)
  void matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias, const float* residual, int R, int K,
                      int N) override {
    cpu::matmul_forward(out.f32("out"), inp.f32("inp"), weight.f32("weight"), bias, residual, R, K, N, bf16_);
  }
  void matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight, int R, int K,
                       int N, bool assign_dweight) override {
    cpu::matmul_backward(dinp.f32("dinp"), dweight, dbias, dout.f32("dout"), inp.f32("inp"), weight.f32("weight"), R,
                         K, N, bf16_, assign_dweight);
  }
  void matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R, int K,
                           int N) override {
    cpu::matmul_gelu_forward(pre.f32("pre"), act.f32("act"), inp.f32("inp"), weight.f32("weight"), bias, R, K, N,
                             bf16_);
  }
  void matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight,
                            ActIn gelu_inp, int R, int K, int N, bool assign_dweight) override {
    cpu::matmul_backward_gelu(dinp.f32("dinp"), dweight, dbias, dout.f32("dout"), inp.f32("inp"),
                              weight.f32("weight"), gelu_inp.f32("gelu_inp"), R, K, N, bf16_, assign_dweight);
  }
  void layernorm_forward(Act out, float* mean, float* rstd, const float* inp, const float* weight,
                         const float* bias, int R, int C, float eps) override {
    cpu::layernorm_forward(out.f32("out"), mean, rstd, inp, weight, bias, R, C, eps);
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int R, int C) override {
    cpu::layernorm_backward(dinp, dweight, dbias, dout.f32("dout"), inp, weight, mean, rstd, R, C);
  }
  void gelu_forward(Act out, ActIn inp, size_t n) override { cpu::gelu_forward(out.f32("out"), inp.f32("inp"), n); }
  void gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) override {
    cpu::gelu_backward(dinp.f32("dinp"), inp.f32("inp"), dout.f32("dout"), n);
  }
  void attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) override {
    cpu::attention_forward(out.f32("out"), lse, qkv.f32("qkv"), S, T, H, dh);
  }
  void attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, int S, int T, int H,
                          int dh) override {
    cpu::attention_backward(dqkv.f32("dqkv"), dout.f32("dout"), qkv.f32("qkv"), out.f32("out"), lse, S, T, H, dh);
  }
  void gather_visible_patches(Act cols, const float* images, const int32_t* perm, const PartGeometry& g) override {
    cpu::gather_visible_patches(cols.f32("cols"), images, perm, g);
  }
  void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) override {
    cpu::patchify_target(target, images, g, norm_pix);
  }
  void encoder_tokens_forward(float* x, ActIn emb, const float* cls_token, const float* pos_embed,
                              const int32_t* perm, const PartGeometry& g, int D) override {
    cpu::encoder_tokens_forward(x, emb.f32("emb"), cls_token, pos_embed, perm, g, D);
  }
  void encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm,
                               const PartGeometry& g, int D) override {
    cpu::encoder_tokens_backward(demb.f32("demb"), dcls, dx, perm, g, D);
  }
  void decoder_tokens_forward(float* z, ActIn y, const float* mask_token, const float* dec_pos_embed,
                              const int32_t* perm, const PartGeometry& g, int Dd) override {
    cpu::decoder_tokens_forward(z, y.f32("y"), mask_token, dec_pos_embed, perm, g, Dd);
  }
  void decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm,
                               const PartGeometry& g, int Dd) override {
    cpu::decoder_tokens_backward(dy.f32("dy"), dmask, dz, perm, g, Dd);
  }
  void loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target,
                             const int32_t* perm, const PartGeometry& g, float lambda, bool l1) override {
    *losses = cpu::loss_forward_backward(dpred.f32("dpred"), pred.f32("pred"), target, perm, g, lambda, l1);
  }

  void column_sum_accumulate(float* dst, const float* src, int R, int C) override {
    cpu::column_sum_accumulate(dst, src, R, C);
  }
  void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) override {
    cpu::pool_tokens_forward(pooled, x, S, T, D, mean);
  }
  void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) override {
    cpu::pool_tokens_backward(dx, dpooled, S, T, D, mean);
  }
  void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep, int S,
                               size_t n) override {
    cpu::residual_scaled_forward(out, res, branch, keep, S, n);
  }
  void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) override {
    cpu::scale_rows(out, inp, keep, S, n);
  }
  void cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits, const float* targets,
                                      int B, int C) override {
    *loss = cpu::cross_entropy_forward_backward(dlogits, logits, targets, B, C);
  }

  void grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) override {
    *norm_sq = cpu::grad_norm_squared(grads, segments, count);
  }
  void scale(float* data, const ParamSegment* segments, int count, float factor) override {
    cpu::scale(data, segments, count, factor);
  }
  // The status is host memory here: decided in place, then the two passes as before. The CPU's
  // GEMMs read the fp32 master weights (weight_dtype() is fp32), so params_bf16 is normally null;
  // given one (the bf16 reference backend, core/bf16_reference_backend.h, forwards its copy here),
  // it is rewritten from the updated parameters over the segments, as the device's AdamW does.
  void adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
             const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status, float clip_grad,
             bool check_loss) override {
    const StepDecision d = decide_step(*status, clip_grad, check_loss);
    if (!d.update) return;
    if (d.clip) cpu::scale(grads, segments, count, d.factor);
    cpu::adamw(params, grads, exp_avg, exp_avg_sq, segments, count, s);
    if (params_bf16)
      for (int i = 0; i < count; ++i)
        convert_to_bf16(params_bf16 + segments[i].offset, params + segments[i].offset, segments[i].size);
  }

 private:
  bool bf16_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(bool bf16_matmul) {
  std::string why;
  if (bf16_matmul && !gemm_bf16_kernel_name(&why)) throw std::runtime_error("cpuMatmul 'bf16' is not available: " + why);
  return std::make_unique<CpuBackend>(bf16_matmul);
}

}  // namespace emae::cpu
