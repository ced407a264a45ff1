// The shared optimizer step (optimizer_step.h).
#include "core/optimizer_step.h"

#include <cmath>

namespace emae {

StepResult adamw_step(Backend& backend, const OptimizerBuffers& b, const std::vector<ParamSegment>& segments,
                      const OptimOptions& opt, int64_t& step, LossMessage loss_message) {
  const int count = (int)segments.size();
  const int64_t t = step + 1;
  AdamWScalars s;
  s.lr = opt.lr;
  s.beta1 = opt.beta1;
  s.beta2 = opt.beta2;
  s.eps = opt.eps;
  s.weight_decay = opt.weight_decay;
  s.bias_correction1 = (float)(1.0 - std::pow((double)opt.beta1, (double)t));
  s.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow((double)opt.beta2, (double)t));
  backend.grad_norm_squared(&b.status->grad_norm_sq, b.grads, segments.data(), count);
  // the backend decides from the status where it lies: no host round trip before the update
  backend.adamw(b.params, b.grads, b.exp_avg, b.exp_avg_sq, b.params_bf16, segments.data(), count, s, b.status,
                opt.clip_grad, loss_message != nullptr);
  StepStatus status;
  backend.download(&status, b.status, sizeof(status));  // the step's one host synchronization
  // the same decision the backend took (decide_step, from the same values), for the error
  if (!decide_step(status, opt.clip_grad, loss_message != nullptr).update) {
    if (loss_message && !is_finite(status.losses.loss)) throw NonFiniteLoss(loss_message(status.losses));
    throw NonFiniteLoss("the gradients are not finite; parameters and optimizer state were not updated");
  }
  StepResult r;
  r.losses = status.losses;
  r.grad_norm = std::sqrt(status.grad_norm_sq);
  step = t;
  r.step = t;
  return r;
}

}  // namespace emae
