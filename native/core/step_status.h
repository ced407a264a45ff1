// The step status: what a training step reads back on the host, kept in backend memory while
// the step runs. The loss ops write the losses into it, grad_norm_squared the gradient norm, and
// the optimizer (Backend::adamw) decides from it, where it lies, whether and how to update: a
// device backend needs no host round trip inside the step, and the host reads the block once,
// at the end (optimizer_step.h). decide_step is compiled for host and device (as
// elementwise.h), so a backend that decides on the host and one that decides on the device
// take the same decision from the same values.
#pragma once
#include <cmath>

#include "core/elementwise.h"  // EMAE_HD

namespace emae {

struct LossValues {
  double loss = 0, recon = 0, consistency = 0;
};

// Plain doubles, the same layout on host and device; a model owns one in backend memory.
struct StepStatus {
  LossValues losses;        // the loss ops (the classifier's cross-entropy writes losses.loss)
  double grad_norm_sq = 0;  // grad_norm_squared: Σ g² over the trainable segments
};

// What the optimizer does with a step.
struct StepDecision {
  int update = 0;      // 1: AdamW runs; 0: refused, nothing changes (a non-finite loss or norm)
  int clip = 0;        // 1: the gradients are scaled by factor first (0 < clip_grad < ‖g‖)
  float factor = 1.f;  // clip_grad / (‖g‖ + 1e-6), rounded once to float (timm's clip_grad_norm_)
};

EMAE_HD bool is_finite(double x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

// check_loss: refuse the step when status.losses.loss is not finite (a caller that checked the
// losses itself, or has none, passes false). The norm is always checked.
EMAE_HD StepDecision decide_step(const StepStatus& status, float clip_grad, bool check_loss) {
  StepDecision d;
  if (check_loss && !is_finite(status.losses.loss)) return d;
  const double norm = sqrt(status.grad_norm_sq);
  if (!is_finite(norm)) return d;
  d.update = 1;
  if (clip_grad > 0 && norm > clip_grad) {
    d.clip = 1;
    d.factor = (float)(clip_grad / (norm + 1e-6));
  }
  return d;
}

}  // namespace emae
