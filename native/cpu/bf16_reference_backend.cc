// The bf16 reference decorator (bf16_reference_backend.h). Every op widens all its bf16 inputs
// before the inner op runs and rounds its bf16 outputs after it, so an output may alias an input
// (gelu_backward's dinp and dout) and no output is read before it is written. Every Act output of
// the interface is assigned (the accumulating outputs are fp32 and pass through), so an output's
// scratch needs no initial values.
// Calls the CUDA backend refuses (cuda/cuda_backend.cu) are refused here too, so that a CPU run
// finds them: the ops it runs in one kernel instantiation per storage type (GELU, attention, loss)
// take all their views in one type, and a GEMM with a residual writes an fp32 out.
#include "cpu/bf16_reference_backend.h"

#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace emae::cpu {
namespace {

void widen(float* dst, const uint16_t* src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) dst[i] = float_from_bf16(src[i]);
}

void round_to_bf16(uint16_t* dst, const float* src, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (size_t i = 0; i < n; ++i) dst[i] = bf16_from_float(src[i]);
}

// std::logic_error unless the (non-null) views share one storage type, as the CUDA backend needs
void require_one_storage(const char* op, std::initializer_list<ActIn> views) {
  const ActIn* first = nullptr;
  for (const ActIn& v : views) {
    if (!v) continue;
    if (!first) first = &v;
    else if (v.dtype != first->dtype)
      throw std::logic_error(std::string("bf16 reference backend: ") + op + " got " + dtype_name(first->dtype) + " and " +
                             dtype_name(v.dtype) + " views; the CUDA backend needs them in one storage type");
  }
}

// The fp32 buffers of one op call: inputs widened on entry, outputs rounded by finish().
class Staging {
 public:
  explicit Staging(std::vector<std::vector<float>>& pool) : pool_(pool) {}
  const float* in(ActIn v, size_t n) {
    if (!v || v.is_f32()) return static_cast<const float*>(v.data);
    float* f = buffer(n);
    widen(f, v.bf16(), n);
    return f;
  }
  float* out(Act v, size_t n) {
    if (!v || v.is_f32()) return static_cast<float*>(v.data);
    float* f = buffer(n);
    outputs_.push_back({v.bf16(), f, n});
    return f;
  }
  void finish() {
    for (const Output& o : outputs_) round_to_bf16(o.dst, o.src, o.n);
  }

 private:
  struct Output {
    uint16_t* dst;
    const float* src;
    size_t n;
  };
  float* buffer(size_t n) {
    if (used_ == pool_.size()) pool_.emplace_back();
    std::vector<float>& b = pool_[used_++];
    if (b.size() < n) b.resize(n);
    return b.data();
  }
  std::vector<std::vector<float>>& pool_;
  size_t used_ = 0;
  std::vector<Output> outputs_;
};

class Bf16ReferenceBackend final : public Backend {
 public:
  explicit Bf16ReferenceBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {
    if (inner_->activation_dtype() != DType::kF32)
      throw std::logic_error("the bf16 reference backend wraps an fp32 backend");
  }
  std::string name() const override { return inner_->name() + " with bf16 activations (reference)"; }
  DType activation_dtype() const override { return DType::kBF16; }
  DType weight_dtype() const override { return DType::kBF16; }
  void convert_to_bf16(uint16_t* dst, const float* src, size_t n) override { round_to_bf16(dst, src, n); }

  void* allocate(size_t bytes) override { return inner_->allocate(bytes); }
  void release(void* ptr) override { inner_->release(ptr); }
  void upload(void* dst, const void* src, size_t bytes) override { inner_->upload(dst, src, bytes); }
  void upload_input(void* dst, const void* src, size_t bytes) override { inner_->upload_input(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { inner_->download(dst, src, bytes); }
  void zero(void* dst, size_t bytes) override { inner_->zero(dst, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { inner_->copy(dst, src, bytes); }

  // ---- ops on views: widened, the inner fp32 op, rounded -----------------------------------
  void matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias, const float* residual, int R, int K,
                      int N) override {
    if (residual && out.is_bf16())  // the CUDA GEMMs: a residual needs an fp32 C (the residual stream)
      throw std::logic_error("bf16 reference backend: matmul_forward with a residual writes an fp32 out, got bf16");
    Staging st(pool_);
    const float* i = st.in(inp, (size_t)R * K);
    const float* w = st.in(weight, (size_t)N * K);
    float* o = st.out(out, (size_t)R * N);
    inner_->matmul_forward(o, i, w, bias, residual, R, K, N);
    st.finish();
  }
  void matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight, int R, int K,
                       int N, bool assign_dweight) override {
    Staging st(pool_);
    const float* d = st.in(dout, (size_t)R * N);
    const float* i = st.in(inp, (size_t)R * K);
    const float* w = st.in(weight, (size_t)N * K);
    float* di = st.out(dinp, (size_t)R * K);
    inner_->matmul_backward(di, dweight, dbias, d, i, w, R, K, N, assign_dweight);
    st.finish();
  }
  // fused as the device's epilogue: act = gelu(pre) from the fp32 pre, both rounded
  void matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R, int K,
                           int N) override {
    Staging st(pool_);
    const float* i = st.in(inp, (size_t)R * K);
    const float* w = st.in(weight, (size_t)N * K);
    float* p = st.out(pre, (size_t)R * N);
    float* a = st.out(act, (size_t)R * N);
    inner_->matmul_gelu_forward(p, a, i, w, bias, R, K, N);
    st.finish();
  }
  void matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight,
                            ActIn gelu_inp, int R, int K, int N, bool assign_dweight) override {
    Staging st(pool_);
    const float* d = st.in(dout, (size_t)R * N);
    const float* i = st.in(inp, (size_t)R * K);
    const float* w = st.in(weight, (size_t)N * K);
    const float* g = st.in(gelu_inp, (size_t)R * K);
    float* di = st.out(dinp, (size_t)R * K);
    inner_->matmul_backward_gelu(di, dweight, dbias, d, i, w, g, R, K, N, assign_dweight);
    st.finish();
  }
  void layernorm_forward(Act out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                         int R, int C, float eps) override {
    Staging st(pool_);
    float* o = st.out(out, (size_t)R * C);
    inner_->layernorm_forward(o, mean, rstd, inp, weight, bias, R, C, eps);
    st.finish();
  }
  void layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int R, int C) override {
    Staging st(pool_);
    const float* d = st.in(dout, (size_t)R * C);
    inner_->layernorm_backward(dinp, dweight, dbias, d, inp, weight, mean, rstd, R, C);
  }
  void gelu_forward(Act out, ActIn inp, size_t n) override {
    require_one_storage("gelu_forward", {out, inp});
    Staging st(pool_);
    const float* i = st.in(inp, n);
    float* o = st.out(out, n);
    inner_->gelu_forward(o, i, n);
    st.finish();
  }
  void gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) override {  // dinp may alias dout
    require_one_storage("gelu_backward", {dinp, inp, dout});
    Staging st(pool_);
    const float* i = st.in(inp, n);
    const float* d = st.in(dout, n);
    float* di = st.out(dinp, n);
    inner_->gelu_backward(di, i, d, n);
    st.finish();
  }
  void attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) override {
    require_one_storage("attention_forward", {out, qkv});
    const size_t rows = (size_t)S * T, D = (size_t)H * dh;
    Staging st(pool_);
    const float* q = st.in(qkv, rows * 3 * D);
    float* o = st.out(out, rows * D);
    inner_->attention_forward(o, lse, q, S, T, H, dh);
    st.finish();
  }
  void attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, int S, int T, int H,
                          int dh) override {
    require_one_storage("attention_backward", {dqkv, dout, qkv, out});
    const size_t rows = (size_t)S * T, D = (size_t)H * dh;
    Staging st(pool_);
    const float* d = st.in(dout, rows * D);
    const float* q = st.in(qkv, rows * 3 * D);
    const float* o = st.in(out, rows * D);
    float* dq = st.out(dqkv, rows * 3 * D);
    inner_->attention_backward(dq, d, q, o, lse, S, T, H, dh);
    st.finish();
  }
  void gather_visible_patches(Act cols, const float* images, const int32_t* perm, const PartGeometry& g) override {
    Staging st(pool_);
    float* c = st.out(cols, (size_t)g.batch * g.parts * g.visible * g.channels * g.patch * g.patch);
    inner_->gather_visible_patches(c, images, perm, g);
    st.finish();
  }
  void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) override {
    inner_->patchify_target(target, images, g, norm_pix);
  }
  void encoder_tokens_forward(float* x, ActIn emb, const float* cls_token, const float* pos_embed,
                              const int32_t* perm, const PartGeometry& g, int D) override {
    Staging st(pool_);
    const float* e = st.in(emb, (size_t)g.batch * g.parts * g.visible * D);
    inner_->encoder_tokens_forward(x, e, cls_token, pos_embed, perm, g, D);
  }
  void encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm, const PartGeometry& g,
                               int D) override {
    Staging st(pool_);
    float* de = st.out(demb, (size_t)g.batch * g.parts * g.visible * D);
    inner_->encoder_tokens_backward(de, dcls, dx, perm, g, D);
    st.finish();
  }
  void decoder_tokens_forward(float* z, ActIn y, const float* mask_token, const float* dec_pos_embed,
                              const int32_t* perm, const PartGeometry& g, int Dd) override {
    Staging st(pool_);
    const float* yy = st.in(y, (size_t)g.batch * g.parts * (1 + g.visible) * Dd);
    inner_->decoder_tokens_forward(z, yy, mask_token, dec_pos_embed, perm, g, Dd);
  }
  void decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm, const PartGeometry& g,
                               int Dd) override {
    Staging st(pool_);
    float* d = st.out(dy, (size_t)g.batch * g.parts * (1 + g.visible) * Dd);
    inner_->decoder_tokens_backward(d, dmask, dz, perm, g, Dd);
    st.finish();
  }

  void loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target,
                             const int32_t* perm, const PartGeometry& g, float lambda, bool l1) override {
    require_one_storage("loss_forward_backward", {dpred, pred});
    Staging st(pool_);
    const size_t n = (size_t)g.batch * g.parts * (1 + g.num_patches) * g.patch * g.patch * g.channels;
    const float* y = st.in(pred, n);
    float* d = st.out(dpred, n);
    inner_->loss_forward_backward(losses, d, y, target, perm, g, lambda, l1);
    st.finish();
  }

  // ---- fp32 only: straight through ----------------------------------------------------------
  void column_sum_accumulate(float* dst, const float* src, int R, int C) override {
    inner_->column_sum_accumulate(dst, src, R, C);
  }
  void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) override {
    inner_->pool_tokens_forward(pooled, x, S, T, D, mean);
  }
  void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) override {
    inner_->pool_tokens_backward(dx, dpooled, S, T, D, mean);
  }
  void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep, int S,
                               size_t n) override {
    inner_->residual_scaled_forward(out, res, branch, keep, S, n);
  }
  void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) override {
    inner_->scale_rows(out, inp, keep, S, n);
  }
  void cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits, const float* targets, int B,
                                      int C) override {
    inner_->cross_entropy_forward_backward(loss, dlogits, logits, targets, B, C);
  }
  void grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) override {
    inner_->grad_norm_squared(norm_sq, grads, segments, count);
  }
  void scale(float* data, const ParamSegment* segments, int count, float factor) override {
    inner_->scale(data, segments, count, factor);
  }
  // the CPU backend's AdamW rewrites params_bf16 from the updated parameters (cpu_backend.cc)
  void adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
             const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status, float clip_grad,
             bool check_loss) override {
    if (!params_bf16) throw std::logic_error("bf16 reference backend: adamw needs the bf16 weight copy");
    inner_->adamw(params, grads, exp_avg, exp_avg_sq, params_bf16, segments, count, s, status, clip_grad, check_loss);
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::vector<std::vector<float>> pool_;  // the ops' fp32 staging, kept between calls
};

}  // namespace

std::unique_ptr<Backend> make_bf16_reference_backend(std::unique_ptr<Backend> inner) {
  return std::make_unique<Bf16ReferenceBackend>(std::move(inner));
}

}  // namespace emae::cpu
