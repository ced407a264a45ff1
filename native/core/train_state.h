// What a trainable network (Model, Classifier) keeps in backend memory besides its activations:
// the fp32 master parameters, their gradients, AdamW's two moments, the GEMMs' bf16 copy of the
// parameters (only when the backend's weight_dtype() is bf16; AdamW rewrites it, set_params
// refreshes it) and the step status. Owns them: a failed allocation releases the ones made before
// it, so a model that cannot be created leaks nothing.
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/backend.h"
#include "core/blocks.h"          // Weights
#include "core/optimizer_step.h"  // OptimizerBuffers

namespace emae {

class TrainState {
 public:
  // total floats per buffer; params_host (total) are the initial parameters; gradients and moments
  // start at zero, the step at 0
  TrainState(Backend& backend, size_t total, const float* params_host);
  ~TrainState();
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  float* params = nullptr;
  float* grads = nullptr;
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
  uint16_t* params_bf16 = nullptr;
  StepStatus* status = nullptr;  // the losses and gradient norm of the step in flight
  int64_t step = 0;              // optimizer steps taken

  // host copies, total floats each
  void get_params(float* host) const;
  void set_params(const float* host);  // and the bf16 copy
  void get_grads(float* host) const;
  void get_optimizer_state(float* exp_avg_host, float* exp_avg_sq_host) const;
  void set_optimizer_state(const float* exp_avg_host, const float* exp_avg_sq_host, int64_t step);  // step >= 0

  Weights weights() const { return {params, params_bf16}; }  // what the ops read
  OptimizerBuffers optimizer_buffers() const { return {params, grads, exp_avg, exp_avg_sq, params_bf16, status}; }

 private:
  void release_all();
  Backend& backend_;
  size_t total_;
};

}  // namespace emae
