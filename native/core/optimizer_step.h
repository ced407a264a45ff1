// The optimizer step both model cores share (Model::apply_gradients for pretraining,
// Classifier::apply_gradients for fine-tuning), written against the Backend interface: the
// global gradient norm, refusal of non-finite gradients, optional clipping, and one AdamW call
// over every trainable segment. What differs stays with each model: pretraining's grad_scale
// (micro-batch averaging) before it, fine-tuning's layer-wise lr decay as the segments'
// lr_scale (ParamSegment, backend.h), and each model's words for a non-finite loss.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/backend.h"

namespace emae {

struct OptimOptions {
  float lr = 1e-4f, weight_decay = 0.05f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float clip_grad = 0.f;  // 0: no clipping
};

struct StepResult {
  LossValues losses;
  double grad_norm = 0;  // before clipping
  int64_t step = 0;      // optimizer steps taken, after this one
};

// Thrown when a step's loss (or its gradients) is NaN or infinite; nothing was updated.
struct NonFiniteLoss : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A model's parameters (and their bf16 copy), gradients, AdamW moments and step status: backend
// memory, one flat layout (and one StepStatus).
struct OptimizerBuffers {
  float* params;
  float* grads;
  float* exp_avg;
  float* exp_avg_sq;
  uint16_t* params_bf16;  // the GEMMs' bf16 copy AdamW rewrites (Backend::weight_dtype() bf16), else null
  StepStatus* status;
};

// The message of the NonFiniteLoss for a refused step whose loss is not finite (each model words
// its own), or null: the loss is not checked (the caller read it already, or has none).
using LossMessage = std::string (*)(const LossValues& losses);

// One AdamW step over `segments` (the trainable tensors, each with its weight-decay flag and lr
// multiplier; the same list every step, which a device backend keeps uploaded), decided where the
// gradients are (Backend::adamw) and read back once:
//   status.grad_norm_sq = Σ g² over the segments; then, unless the loss (when loss_message is
//   given) or the norm is not finite:
//   grads *= clip_grad / (grad_norm + 1e-6) when 0 < clip_grad < grad_norm (timm's clip_grad_norm_);
//   AdamW with lr = opt.lr (times each segment's lr_scale) and the bias corrections of step
//   t = step + 1.
// Then the status is downloaded — the step's one host synchronization — and a refused step throws
// NonFiniteLoss (loss_message's text, or the gradients') with parameters, moments and `step`
// untouched; else step = t. Returns the status' losses, grad_norm (before clipping) and t.
StepResult adamw_step(Backend& backend, const OptimizerBuffers& buffers, const std::vector<ParamSegment>& segments,
                      const OptimOptions& opt, int64_t& step, LossMessage loss_message);

}  // namespace emae
