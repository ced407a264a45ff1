// The shared optimizer step (optimizer_step.h).
#include "core/optimizer_step.h"

#include <cmath>

namespace emae {

StepResult adamw_step(Backend& backend, const OptimizerBuffers& b, const std::vector<ParamSegment>& segments,
                      const OptimOptions& opt, int64_t& step) {
  StepResult r;
  const int count = (int)segments.size();
  r.grad_norm = std::sqrt(backend.grad_norm_squared(b.grads, segments.data(), count));
  if (!std::isfinite(r.grad_norm))
    throw NonFiniteLoss("the gradients are not finite; parameters and optimizer state were not updated");
  if (opt.clip_grad > 0 && r.grad_norm > opt.clip_grad)
    backend.scale(b.grads, segments.data(), count, (float)(opt.clip_grad / (r.grad_norm + 1e-6)));
  const int64_t t = step + 1;
  AdamWScalars s;
  s.lr = opt.lr;
  s.beta1 = opt.beta1;
  s.beta2 = opt.beta2;
  s.eps = opt.eps;
  s.weight_decay = opt.weight_decay;
  s.bias_correction1 = (float)(1.0 - std::pow((double)opt.beta1, (double)t));
  s.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow((double)opt.beta2, (double)t));
  backend.adamw(b.params, b.grads, b.exp_avg, b.exp_avg_sq, segments.data(), count, s);
  step = t;
  r.step = t;
  return r;
}

}  // namespace emae
