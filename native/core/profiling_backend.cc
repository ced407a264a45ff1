// The profiling decorator (profiling_backend.h) and the host clock.
#include "core/profiling_backend.h"

#include <algorithm>
#include <chrono>
#include <initializer_list>
#include <type_traits>
#include <utility>

namespace emae {
namespace {

class HostOpClock final : public OpClock {
 public:
  const char* kind() const override { return "host-clock"; }
  void begin_step() override { step_start_ = Clock::now(); }
  void end_step() noexcept override { times_.add_step(ms_since(step_start_)); }
  void begin_op() override { op_start_ = Clock::now(); }
  void end_op(int row) override { times_.add_op(row, ms_since(op_start_)); }
  void cancel_op() noexcept override {}
  void collect(std::vector<double>& row_ms, double& step_ms, bool) override { times_.move_to(row_ms, step_ms); }

 private:
  using Clock = std::chrono::steady_clock;
  static double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
  }
  Clock::time_point step_start_{}, op_start_{};
  MeasuredTimes times_;
};

}  // namespace

std::unique_ptr<OpClock> make_host_clock() { return std::make_unique<HostOpClock>(); }

// ---- ProfilingBackend ----------------------------------------------------------------------------

// An op's name is compared by address: each is one literal, written once, in this file.
bool ProfilingBackend::Key::operator==(const Key& o) const {
  if (op != o.op || rank != o.rank || bf16 != o.bf16) return false;
  for (int i = 0; i < rank; ++i)
    if (dims[i] != o.dims[i]) return false;
  return true;
}

size_t ProfilingBackend::KeyHash::operator()(const Key& k) const {
  size_t h = std::hash<const void*>()(k.op) ^ (size_t)k.bf16;
  for (int i = 0; i < k.rank; ++i) h = h * 1000003u ^ std::hash<int>()(k.dims[i]);
  return h;
}

ProfilingBackend::Key ProfilingBackend::key(const char* op, std::initializer_list<int> dims, bool bf16) {
  Key k{op, 0, {0, 0, 0, 0}, bf16};
  for (int d : dims)
    if (k.rank < 4) k.dims[k.rank++] = d;
  return k;
}

ProfilingBackend::ProfilingBackend(std::unique_ptr<Backend> inner, std::unique_ptr<OpClock> clock)
    : inner_(std::move(inner)), clock_(std::move(clock)) {}

ProfilingBackend::~ProfilingBackend() = default;

int ProfilingBackend::row_of(const Key& k) {
  auto it = rows_.find(k);
  if (it != rows_.end()) return it->second;
  const int row = (int)keys_.size();
  rows_.emplace(k, row);
  keys_.push_back(k);
  calls_.push_back(0);
  return row;
}

template <typename Call> auto ProfilingBackend::timed(const Key& k, Call&& call) -> decltype(call()) {
  if (depth_ == 0) return call();  // outside any step: not recorded
  const int row = row_of(k);
  clock_->begin_op();
  ++calls_[row];
  try {
    if constexpr (std::is_void_v<decltype(call())>) {
      call();
      clock_->end_op(row);
    } else {
      auto result = call();
      clock_->end_op(row);
      return result;
    }
  } catch (...) {
    clock_->cancel_op();
    throw;
  }
}

void ProfilingBackend::begin_step() {
  if (depth_ == 0) {
    clock_->begin_step();
    ++steps_;
  }
  ++depth_;
}

void ProfilingBackend::end_step() noexcept {
  if (depth_ > 0 && --depth_ == 0) clock_->end_step();
}

ProfileReport ProfilingBackend::report(bool reset) {
  clock_->collect(ms_, step_ms_, true);
  ms_.resize(keys_.size(), 0.0);
  ProfileReport r;
  r.timing = clock_->kind();
  r.steps = steps_;
  r.step_ms = step_ms_;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (calls_[i] == 0) continue;
    ProfileRow row;
    row.op = keys_[i].op;
    for (int d = 0; d < keys_[i].rank; ++d) row.shape += (d ? "×" : "") + std::to_string(keys_[i].dims[d]);
    if (keys_[i].bf16) row.shape += row.shape.empty() ? "bf16" : " bf16";
    row.calls = calls_[i];
    row.ms = ms_[i];
    r.ops_ms += row.ms;
    r.rows.push_back(std::move(row));
  }
  std::stable_sort(r.rows.begin(), r.rows.end(), [](const ProfileRow& a, const ProfileRow& b) { return a.ms > b.ms; });
  if (reset) {
    steps_ = 0;
    step_ms_ = 0;
    std::fill(calls_.begin(), calls_.end(), 0);
    std::fill(ms_.begin(), ms_.end(), 0.0);
  }
  return r;
}

ProfilingBackend* profiling_of(Backend& backend) { return dynamic_cast<ProfilingBackend*>(&backend); }

// ---- forwarding: each method names its row and calls the inner backend exactly as it was called ------
// Shapes: the GEMMs R×K×N, attention S×T×H×dh, LayerNorm R×C; the other ops by name only.

void ProfilingBackend::upload(void* dst, const void* host_src, size_t bytes) {
  timed(key("upload"), [&] { inner_->upload(dst, host_src, bytes); });
}
void ProfilingBackend::upload_input(void* dst, const void* host_src, size_t bytes) {
  timed(key("upload_input"), [&] { inner_->upload_input(dst, host_src, bytes); });
}
void ProfilingBackend::download(void* host_dst, const void* src, size_t bytes) {
  timed(key("download"), [&] { inner_->download(host_dst, src, bytes); });
}
void ProfilingBackend::zero(void* dst, size_t bytes) {
  timed(key("zero"), [&] { inner_->zero(dst, bytes); });
}
void ProfilingBackend::copy(void* dst, const void* src, size_t bytes) {
  timed(key("copy"), [&] { inner_->copy(dst, src, bytes); });
}

void ProfilingBackend::convert_to_bf16(uint16_t* dst, const float* src, size_t n) {
  timed(key("convert_to_bf16"), [&] { inner_->convert_to_bf16(dst, src, n); });
}

// Whether any of an op's views is bf16 (the row then says so).
namespace {
bool any_bf16(std::initializer_list<ActIn> views) {
  for (const ActIn& v : views)
    if (v.is_bf16()) return true;
  return false;
}
}  // namespace

void ProfilingBackend::matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias, const float* residual,
                                      int R, int K, int N) {
  timed(key("matmul_forward", {R, K, N}, any_bf16({out, inp, weight})),
        [&] { inner_->matmul_forward(out, inp, weight, bias, residual, R, K, N); });
}
void ProfilingBackend::matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight,
                                       int R, int K, int N, bool assign_dweight) {
  timed(key("matmul_backward", {R, K, N}, any_bf16({dinp, dout, inp, weight})),
        [&] { inner_->matmul_backward(dinp, dweight, dbias, dout, inp, weight, R, K, N, assign_dweight); });
}
// The fused pairs go to the inner backend's own version (fused or its defaults), timed as one op.
void ProfilingBackend::matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R, int K,
                                           int N) {
  timed(key("matmul_gelu_forward", {R, K, N}, any_bf16({pre, act, inp, weight})),
        [&] { inner_->matmul_gelu_forward(pre, act, inp, weight, bias, R, K, N); });
}
void ProfilingBackend::matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp,
                                            ActIn weight, ActIn gelu_inp, int R, int K, int N, bool assign_dweight) {
  timed(key("matmul_backward_gelu", {R, K, N}, any_bf16({dinp, dout, inp, weight, gelu_inp})), [&] {
    inner_->matmul_backward_gelu(dinp, dweight, dbias, dout, inp, weight, gelu_inp, R, K, N, assign_dweight);
  });
}
void ProfilingBackend::layernorm_forward(Act out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, int R, int C, float eps) {
  timed(key("layernorm_forward", {R, C}, out.is_bf16()),
        [&] { inner_->layernorm_forward(out, mean, rstd, inp, weight, bias, R, C, eps); });
}
void ProfilingBackend::layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout, const float* inp,
                                          const float* weight, const float* mean, const float* rstd, int R, int C) {
  timed(key("layernorm_backward", {R, C}, dout.is_bf16()),
        [&] { inner_->layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, R, C); });
}
void ProfilingBackend::gelu_forward(Act out, ActIn inp, size_t n) {
  timed(key("gelu_forward", {}, any_bf16({out, inp})), [&] { inner_->gelu_forward(out, inp, n); });
}
void ProfilingBackend::gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) {
  timed(key("gelu_backward", {}, any_bf16({dinp, inp, dout})), [&] { inner_->gelu_backward(dinp, inp, dout, n); });
}
void ProfilingBackend::attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) {
  timed(key("attention_forward", {S, T, H, dh}, any_bf16({out, qkv})),
        [&] { inner_->attention_forward(out, lse, qkv, S, T, H, dh); });
}
void ProfilingBackend::attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, int S, int T,
                                          int H, int dh) {
  timed(key("attention_backward", {S, T, H, dh}, any_bf16({dqkv, dout, qkv, out})),
        [&] { inner_->attention_backward(dqkv, dout, qkv, out, lse, S, T, H, dh); });
}
void ProfilingBackend::gather_visible_patches(Act cols, const float* images, const int32_t* perm,
                                              const PartGeometry& g) {
  timed(key("gather_visible_patches", {}, cols.is_bf16()),
        [&] { inner_->gather_visible_patches(cols, images, perm, g); });
}
void ProfilingBackend::patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) {
  timed(key("patchify_target"), [&] { inner_->patchify_target(target, images, g, norm_pix); });
}
void ProfilingBackend::encoder_tokens_forward(float* x, ActIn emb, const float* cls_token, const float* pos_embed,
                                              const int32_t* perm, const PartGeometry& g, int D) {
  timed(key("encoder_tokens_forward", {}, emb.is_bf16()),
        [&] { inner_->encoder_tokens_forward(x, emb, cls_token, pos_embed, perm, g, D); });
}
void ProfilingBackend::encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm,
                                               const PartGeometry& g, int D) {
  timed(key("encoder_tokens_backward", {}, demb.is_bf16()),
        [&] { inner_->encoder_tokens_backward(demb, dcls, dx, perm, g, D); });
}
void ProfilingBackend::decoder_tokens_forward(float* z, ActIn y, const float* mask_token, const float* dec_pos_embed,
                                              const int32_t* perm, const PartGeometry& g, int Dd) {
  timed(key("decoder_tokens_forward", {}, y.is_bf16()),
        [&] { inner_->decoder_tokens_forward(z, y, mask_token, dec_pos_embed, perm, g, Dd); });
}
void ProfilingBackend::decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm,
                                               const PartGeometry& g, int Dd) {
  timed(key("decoder_tokens_backward", {}, dy.is_bf16()),
        [&] { inner_->decoder_tokens_backward(dy, dmask, dz, perm, g, Dd); });
}
void ProfilingBackend::loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target,
                                             const int32_t* perm, const PartGeometry& g, float lambda, bool l1) {
  timed(key("loss_forward_backward", {}, any_bf16({dpred, pred})),
        [&] { inner_->loss_forward_backward(losses, dpred, pred, target, perm, g, lambda, l1); });
}
void ProfilingBackend::column_sum_accumulate(float* dst, const float* src, int R, int C) {
  timed(key("column_sum_accumulate"), [&] { inner_->column_sum_accumulate(dst, src, R, C); });
}
void ProfilingBackend::pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) {
  timed(key("pool_tokens_forward"), [&] { inner_->pool_tokens_forward(pooled, x, S, T, D, mean); });
}
void ProfilingBackend::pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) {
  timed(key("pool_tokens_backward"), [&] { inner_->pool_tokens_backward(dx, dpooled, S, T, D, mean); });
}
void ProfilingBackend::residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep,
                                               int S, size_t n) {
  timed(key("residual_scaled_forward"), [&] { inner_->residual_scaled_forward(out, res, branch, keep, S, n); });
}
void ProfilingBackend::scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) {
  timed(key("scale_rows"), [&] { inner_->scale_rows(out, inp, keep, S, n); });
}
void ProfilingBackend::cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits,
                                                      const float* targets, int B, int C) {
  timed(key("cross_entropy_forward_backward"),
        [&] { inner_->cross_entropy_forward_backward(loss, dlogits, logits, targets, B, C); });
}
void ProfilingBackend::grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) {
  timed(key("grad_norm_squared"), [&] { inner_->grad_norm_squared(norm_sq, grads, segments, count); });
}
void ProfilingBackend::scale(float* data, const ParamSegment* segments, int count, float factor) {
  timed(key("scale"), [&] { inner_->scale(data, segments, count, factor); });
}
void ProfilingBackend::adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
                             const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status,
                             float clip_grad, bool check_loss) {
  timed(key("adamw", {}, params_bf16 != nullptr), [&] {
    inner_->adamw(params, grads, exp_avg, exp_avg_sq, params_bf16, segments, count, s, status, clip_grad, check_loss);
  });
}

}  // namespace emae
