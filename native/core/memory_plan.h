// The backend memory a model holds for training at one batch size, in bytes: what the model
// allocates (parameters, gradients, AdamW moments, the GEMMs' bf16 weight copy) and its activation
// arena as the planner lays it out (blocks.h: ArenaPlanner), without allocating it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace emae {

struct MemoryPlan {
  size_t params = 0;       // fp32 master weights
  size_t grads = 0;        // fp32
  size_t optimizer = 0;    // AdamW's two fp32 moments
  size_t weight_copy = 0;  // the bf16 copy the GEMMs read (Backend::weight_dtype() bf16), else 0
  size_t activations = 0;  // the training arena: inputs, activations, losses' inputs, backward scratch
  size_t total() const { return params + grads + optimizer + weight_copy + activations; }
};

// A network of `param_count` parameters (with a bf16 copy for the GEMMs beside the fp32 master
// when bf16_weight_copy) and an activation arena of `activation_bytes`.
inline MemoryPlan memory_plan_of(size_t param_count, bool bf16_weight_copy, size_t activation_bytes) {
  MemoryPlan m;
  m.params = m.grads = param_count * sizeof(float);
  m.optimizer = 2 * param_count * sizeof(float);
  m.weight_copy = bf16_weight_copy ? param_count * sizeof(uint16_t) : 0;
  m.activations = activation_bytes;
  return m;
}

}  // namespace emae
