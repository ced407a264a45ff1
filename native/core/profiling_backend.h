// A profiling decorator of the Backend interface (issue 12: where a training step's time goes,
// and whether the gaps between its kernels are worth a CUDA graph). ProfilingBackend wraps
// another backend, forwards every call to it unchanged (same arguments, same order: results are
// bitwise those of the inner backend) and records, per op and shape, the calls and their time.
// Only the ops inside a step window (begin_step .. end_step, one per native compute call:
// ProfiledStep) are recorded; memory management (allocate, release) never is.
//
// Timing is a policy (OpClock): the CPU backend's ops are synchronous, so a host clock around
// each call is their time (make_host_clock); a device backend's ops are queued, so their times
// come from the device's own clock and are read later (cuda/op_timer.h: CUDA events on the
// backend's stream, resolved when a report is asked for, no synchronization per op).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/backend.h"

namespace emae {

// Times the ops and steps of one ProfilingBackend. Calls come in nested pairs:
// begin_step (begin_op end_op|cancel_op)* end_step. `row` indexes the decorator's table of
// (op, shape) rows; a clock only adds times to it.
class OpClock {
 public:
  virtual ~OpClock() = default;
  // "host-clock" or "cuda-events": what the times measure
  virtual const char* kind() const = 0;
  virtual void begin_step() = 0;
  // never throws (a ProfiledStep ends its window from a destructor); a window whose end cannot
  // be recorded is dropped
  virtual void end_step() noexcept = 0;
  virtual void begin_op() = 0;
  virtual void end_op(int row) = 0;
  // the op begun last threw: forget it
  virtual void cancel_op() noexcept = 0;
  // Adds the times measured so far, in ms, to row_ms[row] (grown as needed) and the steps' wall
  // time to step_ms, and forgets them. With wait, first waits until everything recorded is
  // measured; without, times not yet known stay for a later call.
  virtual void collect(std::vector<double>& row_ms, double& step_ms, bool wait) = 0;
};

// Times measured by a clock and not yet collected (both clocks keep theirs in one).
class MeasuredTimes {
 public:
  void add_op(int row, double ms) {
    if ((size_t)row >= row_ms_.size()) row_ms_.resize(row + 1, 0.0);
    row_ms_[row] += ms;
  }
  void add_step(double ms) { step_ms_ += ms; }
  // OpClock::collect's adding: into row_ms / step_ms, then forgotten here
  void move_to(std::vector<double>& row_ms, double& step_ms) {
    if (row_ms.size() < row_ms_.size()) row_ms.resize(row_ms_.size(), 0.0);
    for (size_t r = 0; r < row_ms_.size(); ++r) row_ms[r] += row_ms_[r];
    step_ms += step_ms_;
    row_ms_.assign(row_ms_.size(), 0.0);
    step_ms_ = 0;
  }

 private:
  std::vector<double> row_ms_;
  double step_ms_ = 0;
};

// A steady host clock around each call: the time of a synchronous op.
std::unique_ptr<OpClock> make_host_clock();

struct ProfileRow {
  std::string op;     // the Backend method, e.g. "matmul_forward"
  std::string shape;  // e.g. "R×K×N" for the GEMMs ("R×K×N bf16" on bf16 views); empty for ops recorded
                      // by name only (then "bf16" alone on bf16 views)
  int64_t calls = 0;
  double ms = 0;      // total
};

struct ProfileReport {
  std::string timing;  // OpClock::kind()
  int64_t steps = 0;   // step windows measured
  double step_ms = 0;  // their wall time, summed
  double ops_ms = 0;   // the time of the ops inside them, summed
  std::vector<ProfileRow> rows;  // by ms, largest first
};

class ProfilingBackend final : public Backend {
 public:
  ProfilingBackend(std::unique_ptr<Backend> inner, std::unique_ptr<OpClock> clock);
  ~ProfilingBackend() override;

  Backend& inner() { return *inner_; }

  // One native compute call's window (nested calls are part of the outer window).
  void begin_step();
  void end_step() noexcept;
  // Everything measured since creation or the last reset (waits for the device to finish what
  // was recorded); with reset the counts and times start again from zero afterwards.
  ProfileReport report(bool reset);

  std::string name() const override { return inner_->name(); }
  DType activation_dtype() const override { return inner_->activation_dtype(); }
  DType weight_dtype() const override { return inner_->weight_dtype(); }
  void convert_to_bf16(uint16_t* dst, const float* src, size_t n) override;

  void* allocate(size_t bytes) override { return inner_->allocate(bytes); }
  void release(void* ptr) override { inner_->release(ptr); }
  void upload(void* dst, const void* host_src, size_t bytes) override;
  void upload_input(void* dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;

  void matmul_forward(Act out, ActIn inp, ActIn weight, const float* bias, const float* residual, int R, int K,
                      int N) override;
  void matmul_backward(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight, int R, int K,
                       int N, bool assign_dweight) override;
  void matmul_gelu_forward(Act pre, Act act, ActIn inp, ActIn weight, const float* bias, int R, int K,
                           int N) override;
  void matmul_backward_gelu(Act dinp, float* dweight, float* dbias, ActIn dout, ActIn inp, ActIn weight,
                            ActIn gelu_inp, int R, int K, int N, bool assign_dweight) override;
  void layernorm_forward(Act out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                         int R, int C, float eps) override;
  void layernorm_backward(float* dinp, float* dweight, float* dbias, ActIn dout, const float* inp,
                          const float* weight, const float* mean, const float* rstd, int R, int C) override;
  void gelu_forward(Act out, ActIn inp, size_t n) override;
  void gelu_backward(Act dinp, ActIn inp, ActIn dout, size_t n) override;
  void attention_forward(Act out, float* lse, ActIn qkv, int S, int T, int H, int dh) override;
  void attention_backward(Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, int S, int T, int H,
                          int dh) override;
  void gather_visible_patches(Act cols, const float* images, const int32_t* perm, const PartGeometry& g) override;
  void patchify_target(float* target, const float* images, const PartGeometry& g, bool norm_pix) override;
  void encoder_tokens_forward(float* x, ActIn emb, const float* cls_token, const float* pos_embed,
                              const int32_t* perm, const PartGeometry& g, int D) override;
  void encoder_tokens_backward(Act demb, float* dcls, const float* dx, const int32_t* perm, const PartGeometry& g,
                               int D) override;
  void decoder_tokens_forward(float* z, ActIn y, const float* mask_token, const float* dec_pos_embed,
                              const int32_t* perm, const PartGeometry& g, int Dd) override;
  void decoder_tokens_backward(Act dy, float* dmask, const float* dz, const int32_t* perm, const PartGeometry& g,
                               int Dd) override;
  void loss_forward_backward(LossValues* losses, Act dpred, ActIn pred, const float* target,
                             const int32_t* perm, const PartGeometry& g, float lambda, bool l1) override;
  void column_sum_accumulate(float* dst, const float* src, int R, int C) override;
  void pool_tokens_forward(float* pooled, const float* x, int S, int T, int D, bool mean) override;
  void pool_tokens_backward(float* dx, const float* dpooled, int S, int T, int D, bool mean) override;
  void residual_scaled_forward(float* out, const float* res, const float* branch, const float* keep, int S,
                               size_t n) override;
  void scale_rows(float* out, const float* inp, const float* keep, int S, size_t n) override;
  void cross_entropy_forward_backward(double* loss, float* dlogits, const float* logits, const float* targets, int B,
                                      int C) override;
  void grad_norm_squared(double* norm_sq, const float* grads, const ParamSegment* segments, int count) override;
  void scale(float* data, const ParamSegment* segments, int count, float factor) override;
  void adamw(float* params, float* grads, float* exp_avg, float* exp_avg_sq, uint16_t* params_bf16,
             const ParamSegment* segments, int count, const AdamWScalars& s, const StepStatus* status, float clip_grad,
             bool check_loss) override;

 private:
  // A row's key: the op's name (a literal of this file's .cc), up to 4 dimensions, and whether
  // the op read or wrote a bf16 view (its shape then ends in " bf16").
  struct Key {
    const char* op;
    int rank;
    int dims[4];
    bool bf16;
    bool operator==(const Key& o) const;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const;
  };
  static Key key(const char* op, std::initializer_list<int> dims = {}, bool bf16 = false);
  int row_of(const Key& k);
  template <typename Call> auto timed(const Key& k, Call&& call) -> decltype(call());

  std::unique_ptr<Backend> inner_;
  std::unique_ptr<OpClock> clock_;
  int depth_ = 0;  // nesting of begin_step; ops are recorded while > 0
  int64_t steps_ = 0;
  std::unordered_map<Key, int, KeyHash> rows_;
  std::vector<Key> keys_;       // by row
  std::vector<int64_t> calls_;  // by row
  std::vector<double> ms_;      // by row, collected from the clock
  double step_ms_ = 0;
};

// The ProfilingBackend `backend` is, or null.
ProfilingBackend* profiling_of(Backend& backend);

// A step window over one native compute call (trainStep, lossAndGrads, ...), a no-op unless the
// backend is a ProfilingBackend.
class ProfiledStep {
 public:
  explicit ProfiledStep(Backend& backend) : profiler_(profiling_of(backend)) {
    if (profiler_) profiler_->begin_step();
  }
  ~ProfiledStep() {
    if (profiler_) profiler_->end_step();
  }
  ProfiledStep(const ProfiledStep&) = delete;
  ProfiledStep& operator=(const ProfiledStep&) = delete;

 private:
  ProfilingBackend* profiler_;
};

}  // namespace emae
