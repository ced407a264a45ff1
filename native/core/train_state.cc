// A network's parameters, gradients, optimizer state and step status (train_state.h).
#include "core/train_state.h"

#include "core/errors.h"

namespace emae {

TrainState::TrainState(Backend& backend, size_t total, const float* params_host) : backend_(backend), total_(total) {
  const size_t bytes = total * sizeof(float);
  try {
    params = static_cast<float*>(backend_.allocate(bytes));
    grads = static_cast<float*>(backend_.allocate(bytes));
    exp_avg = static_cast<float*>(backend_.allocate(bytes));
    exp_avg_sq = static_cast<float*>(backend_.allocate(bytes));
    if (backend_.weight_dtype() == DType::kBF16)
      params_bf16 = static_cast<uint16_t*>(backend_.allocate(total * sizeof(uint16_t)));
    status = static_cast<StepStatus*>(backend_.allocate(sizeof(StepStatus)));
    backend_.zero(status, sizeof(StepStatus));
    set_params(params_host);
    backend_.zero(grads, bytes);
    backend_.zero(exp_avg, bytes);
    backend_.zero(exp_avg_sq, bytes);
  } catch (...) {
    release_all();  // the destructor does not run for a constructor that throws
    throw;
  }
}

TrainState::~TrainState() { release_all(); }

void TrainState::release_all() {
  for (void* p : {(void*)params, (void*)grads, (void*)exp_avg, (void*)exp_avg_sq, (void*)params_bf16, (void*)status})
    if (p) backend_.release(p);
  params = grads = exp_avg = exp_avg_sq = nullptr;
  params_bf16 = nullptr;
  status = nullptr;
}

void TrainState::get_params(float* host) const { backend_.download(host, params, total_ * sizeof(float)); }

void TrainState::set_params(const float* host) {
  backend_.upload(params, host, total_ * sizeof(float));
  if (params_bf16) backend_.convert_to_bf16(params_bf16, params, total_);  // the GEMMs' copy
}

void TrainState::get_grads(float* host) const { backend_.download(host, grads, total_ * sizeof(float)); }

void TrainState::get_optimizer_state(float* exp_avg_host, float* exp_avg_sq_host) const {
  backend_.download(exp_avg_host, exp_avg, total_ * sizeof(float));
  backend_.download(exp_avg_sq_host, exp_avg_sq, total_ * sizeof(float));
}

void TrainState::set_optimizer_state(const float* exp_avg_host, const float* exp_avg_sq_host, int64_t new_step) {
  if (new_step < 0) throw RangeError("optimizer step must be >= 0");
  backend_.upload(exp_avg, exp_avg_host, total_ * sizeof(float));
  backend_.upload(exp_avg_sq, exp_avg_sq_host, total_ * sizeof(float));
  step = new_step;
}

}  // namespace emae
