// The EMAE model core: MAE-ViT encoder and decoder over K parallel parts, its explicit forward
// and backward, and AdamW, written against the Backend interface. Parameters, gradients,
// optimizer moments and activations live in backend memory; the activation arena is planned
// once per batch size.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/config.h"
#include "core/memory_plan.h"
#include "core/optimizer_step.h"  // OptimOptions, StepResult, NonFiniteLoss
#include "core/params.h"
#include "core/train_state.h"

namespace emae {

class ArenaPlanner;  // core/blocks.h
struct Weights;      // core/blocks.h

class Model {
 public:
  Model(const ModelConfig& config, std::unique_ptr<Backend> backend);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  Backend& backend() { return *backend_; }

  // The bytes a training step at `batch` holds (memory_plan.h), from the planner that lays the
  // arena out; memory_plan plans without a model (nothing allocated), for a backend storing
  // activations and GEMM weights in the given types.
  MemoryPlan memory(int batch) const;
  static MemoryPlan memory_plan(const ModelConfig& config, int batch, DType activations, DType weights);

  // host copies, layout().total floats (set_params also refreshes the GEMMs' bf16 copy)
  void get_params(float* host) const { state_.get_params(host); }
  void set_params(const float* host) { state_.set_params(host); }
  void get_grads(float* host) const { state_.get_grads(host); }
  // The gradient buffer itself (backend memory, layout().total floats), for the data-parallel
  // all-reduce between the backward and apply_gradients (native/distributed).
  float* grad_buffer() { return state_.grads; }
  int64_t step() const { return state_.step; }
  void get_optimizer_state(float* exp_avg, float* exp_avg_sq) const { state_.get_optimizer_state(exp_avg, exp_avg_sq); }
  void set_optimizer_state(const float* exp_avg, const float* exp_avg_sq, int64_t step) {
    state_.set_optimizer_state(exp_avg, exp_avg_sq, step);
  }

  // images (B, C, H, W) and permutations (B, N) from the host. Forward and backward; the
  // gradients stay in backend memory (get_grads copies them out). With accumulate the new
  // gradients are added to the ones already there (gradient accumulation over micro-batches).
  // Reads the losses back (a host sync): accumulation and data parallelism report every
  // micro-batch's.
  LossValues loss_and_grads(const float* images, const int32_t* perm, int batch, float lambda, bool accumulate = false);
  // Forward only (the losses are computed too): predictions (B·K, 1+N, P) into `pred` (host).
  LossValues predict(const float* images, const int32_t* perm, int batch, float lambda, float* pred);
  // Encoder on the whole, unmasked image: features (B, 1+N, D) after the final norm (cls first).
  void encode(const float* images, int batch, float* features);
  // Gradients ready → scale by grad_scale (e.g. 1/micro-batches), then adamw_step
  // (optimizer_step.h): global norm, optional clipping, AdamW at lr for every trainable tensor.
  // The losses are not checked (the caller has them from loss_and_grads).
  StepResult apply_gradients(const OptimOptions& opt, float grad_scale = 1.f);
  // Forward, backward and adamw_step with the loss checked, with no host sync before the
  // optimizer: one at the end. A non-finite loss or gradient throws NonFiniteLoss with the
  // parameters, moments and step untouched.
  StepResult train_step(const float* images, const int32_t* perm, int batch, float lambda, const OptimOptions& opt);

 private:
  struct Arena;  // activations and scratch for one batch size
  void plan(int batch);
  static std::unique_ptr<Arena> plan_arena(const ModelConfig& c, int batch, int parts, int visible, bool decoder,
                                           DType narrow, ArenaPlanner& pl);
  std::unique_ptr<Arena> make_arena(int batch, int parts, int visible, bool decoder);
  void forward_encoder(Arena& a);
  void upload_batch(Arena& a, const float* images, const int32_t* perm);  // (B, C, H, W) and (B, N)
  void forward();  // the losses into state_.status
  void backward(bool accumulate);
  // upload, forward and backward of one batch, nothing read back
  void forward_backward(const float* images, const int32_t* perm, int batch, float lambda, bool accumulate);
  LossValues read_losses() const;  // state_.status's (a host sync)
  PartGeometry geometry(const Arena& a) const;

  ModelConfig config_;
  ParamLayout layout_;
  std::unique_ptr<Backend> backend_;
  TrainState state_;  // parameters, gradients, AdamW moments, the bf16 weight copy, the step status
  std::vector<ParamSegment> trainable_;  // lr_scale 1 each
  // (offset, size) ranges of the gradients a non-accumulating backward adds into, which it zeroes
  // first: every trainable tensor but the linear weights, whose gradients matmul_backward assigns
  std::vector<std::pair<size_t, size_t>> accumulated_grads_;
  std::unique_ptr<Arena> arena_;         // training and predict
  std::unique_ptr<Arena> encode_arena_;  // encode: encoder only, every patch visible
  float lambda_ = 1.f;
};

}  // namespace emae
