// The pre-norm transformer block (timm's Block as MAE uses it) and the activation-arena planner,
// shared by the pretraining model (model.cc) and the fine-tuning classifier (classifier.cc).
// Shapes: S sequences of T tokens, R = S·T rows, D width, H MLP width.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "core/params.h"

namespace emae {

// One transformer block's activations (saved for the backward).
struct BlockActs {
  const float* x_in;   // (R, D) residual stream in
  float* ln1;          // (R, D)
  float* ln1_mean;     // (R)
  float* ln1_rstd;     // (R)
  float* qkv;          // (R, 3D)
  float* att;          // (R, D) attention output before proj
  float* lse;          // (S, heads, T)
  float* x_mid;        // (R, D) residual after attention
  float* ln2;          // (R, D)
  float* ln2_mean;     // (R)
  float* ln2_rstd;     // (R)
  float* fc1;          // (R, H) before GELU
  float* act;          // (R, H) after GELU
  float* x_out;        // (R, D) residual stream out
};

// Dimensions of a stack of blocks (encoder or decoder).
struct StackDims {
  int S, T, D, H, heads;
  int rows() const { return S * T; }
};

// Drop path (stochastic depth) of one block: per-sequence factors keep (S) ∈ {0, 1/(1−p)} on
// the attention and MLP branches; null pointers: no drop path (the residual add fused into the
// branch's last GEMM).
struct DropPath {
  const float* attn = nullptr;
  const float* mlp = nullptr;
};

// Bump allocator: take() hands out byte offsets (64-byte aligned) disguised as pointers; once
// the total is known and allocated, rebase() turns each into a real pointer.
class ArenaPlanner {
 public:
  template <typename T> T* take(size_t count) {
    const size_t offset = bytes_;
    bytes_ += (count * sizeof(T) + 63) & ~size_t(63);
    return reinterpret_cast<T*>(offset);
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

template <typename T> T* rebase(T* offset_ptr, char* base) {
  return reinterpret_cast<T*>(base + reinterpret_cast<uintptr_t>(offset_ptr));
}

// Plans `depth` blocks' activations for dims d (offsets; x_in left unset).
void plan_blocks(ArenaPlanner& pl, const StackDims& d, int depth, std::vector<BlockActs>& out);
// Turns the planned offsets into pointers into `base` and chains the residual stream: block 0
// reads x0, block l reads block l−1's x_out.
void rebase_blocks(std::vector<BlockActs>& blocks, char* base, const float* x0);

void block_forward(Backend& be, const float* params, const BlockOffsets& o, const BlockActs& a, const StackDims& d,
                   float eps, const DropPath& drop = {});
// dres (R, D): on entry d x_out, on exit d x_in (the residual stream gradient flows through
// both skip connections and the branches accumulate into it). wide (R, max(3D, H)) and narrow
// (R, D) are scratch; dbranch (R, D) too, needed only under drop path.
void block_backward(Backend& be, const float* params, float* grads, const BlockOffsets& o, const BlockActs& a,
                    const StackDims& d, float* dres, float* wide, float* narrow, bool assign,
                    const DropPath& drop = {}, float* dbranch = nullptr);

}  // namespace emae
