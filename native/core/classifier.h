// The fine-tuning model core (DESIGN.md §3b, MAE's models_vit + main_finetune): the encoder over
// every patch, global pooling (or the cls token), a LayerNorm and a linear head; soft-target
// cross-entropy; drop path; AdamW with MAE's layer-wise lr decay. Written against the Backend
// interface like model.cc, whose transformer block it shares (blocks.h).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "core/classifier_params.h"
#include "core/memory_plan.h"
#include "core/optimizer_step.h"  // OptimOptions, StepResult, NonFiniteLoss
#include "core/train_state.h"

namespace emae {

class ArenaPlanner;  // core/blocks.h
struct Weights;      // core/blocks.h

struct FinetuneOptim {
  OptimOptions adamw;       // lr is the top layer's (the head's); betas (0.9, 0.999) as MAE's fine-tuning
  float layer_decay = 1.f;  // layer id l gets lr · layer_decay^(depth + 1 − l)
};

class Classifier {
 public:
  Classifier(const ClassifierConfig& config, std::unique_ptr<Backend> backend);
  ~Classifier();
  Classifier(const Classifier&) = delete;
  Classifier& operator=(const Classifier&) = delete;

  const ClassifierConfig& config() const { return config_; }
  const ClassifierLayout& layout() const { return layout_; }
  Backend& backend() { return *backend_; }

  // The bytes a training step at `batch` holds (memory_plan.h), from the planner that lays the
  // arena out; memory_plan plans without a classifier (nothing allocated), for a backend storing
  // activations and GEMM weights in the given types.
  MemoryPlan memory(int batch) const;
  static MemoryPlan memory_plan(const ClassifierConfig& config, int batch, DType activations, DType weights);

  // host copies, layout().total floats (set_params also refreshes the GEMMs' bf16 copy)
  void get_params(float* host) const { state_.get_params(host); }
  void set_params(const float* host) { state_.set_params(host); }
  void get_grads(float* host) const { state_.get_grads(host); }
  int64_t step() const { return state_.step; }
  void get_optimizer_state(float* exp_avg, float* exp_avg_sq) const { state_.get_optimizer_state(exp_avg, exp_avg_sq); }
  void set_optimizer_state(const float* exp_avg, const float* exp_avg_sq, int64_t step) {
    state_.set_optimizer_state(exp_avg, exp_avg_sq, step);
  }

  // images (B, C, H, W), targets (B, numClasses) soft (rows summing to 1), keep (depth, 2, B):
  // the drop-path factors of each block's attention and MLP branch (0 or 1/(1 − p)), or null for
  // none. Forward and backward; returns the mean cross-entropy (a host sync), the gradients stay
  // in backend memory (a non-finite loss leaves them non-finite, not meaningful).
  double loss_and_grads(const float* images, const float* targets, const float* keep, int batch);
  // logits (B, numClasses) on the host; no drop path
  void predict(const float* images, int batch, float* logits);
  // the gradients → adamw_step (optimizer_step.h): global norm, optional clipping, one AdamW call
  // over every tensor, each at lr · layer_decay^(depth + 1 − layer id)
  StepResult apply_gradients(const FinetuneOptim& opt);
  // Forward, backward and adamw_step with the loss checked, with no host sync before the
  // optimizer: one at the end. A non-finite loss or gradient throws NonFiniteLoss with the
  // parameters, moments and step untouched.
  StepResult train_step(const float* images, const float* targets, const float* keep, int batch,
                        const FinetuneOptim& opt);

 private:
  struct Arena;
  static std::unique_ptr<Arena> plan_arena(const ClassifierConfig& c, int batch, bool backward, DType narrow,
                                           ArenaPlanner& pl);
  std::unique_ptr<Arena> make_arena(int batch, bool backward);
  Arena& arena_for(int batch, bool backward);
  void forward(Arena& a, bool drop_path);
  void set_layer_decay(float layer_decay);  // the segments' lr_scale
  void backward(Arena& a, bool drop_path);  // the loss into state_.status->losses.loss
  // upload, forward and backward of one batch, nothing read back
  void forward_backward(const float* images, const float* targets, const float* keep, int batch);
  StepResult optimizer_step(const FinetuneOptim& opt, LossMessage loss_message);  // adamw_step

  ClassifierConfig config_;
  ClassifierLayout layout_;
  std::unique_ptr<Backend> backend_;
  TrainState state_;  // parameters, gradients, AdamW moments, the bf16 weight copy, the step status
  // every tensor, in layout order, with lr_scale = layer_decay_^(depth + 1 − its layer id)
  std::vector<ParamSegment> trainable_;
  std::vector<int> segment_layers_;  // the layer id of each of trainable_
  float layer_decay_ = 1.f;
  // what backward zeroes first: every tensor but the linear weights, whose gradients it assigns
  std::vector<std::pair<size_t, size_t>> accumulated_grads_;
  std::unique_ptr<Arena> train_arena_;    // with the backward's buffers
  std::unique_ptr<Arena> predict_arena_;  // forward only
};

}  // namespace emae
