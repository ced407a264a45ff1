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

// One transformer block's activations (saved for the backward). The Act fields are the ones a
// backend may store narrow (Backend::activation_dtype: bf16 on the GPU); the residual stream and
// the LayerNorm and softmax statistics are always fp32.
struct BlockActs {
  const float* x_in;   // (R, D) residual stream in
  Act ln1;             // (R, D)
  float* ln1_mean;     // (R)
  float* ln1_rstd;     // (R)
  Act qkv;             // (R, 3D)
  Act att;             // (R, D) attention output before proj
  float* lse;          // (S, heads, T)
  float* x_mid;        // (R, D) residual after attention
  Act ln2;             // (R, D)
  float* ln2_mean;     // (R)
  float* ln2_rstd;     // (R)
  Act fc1;             // (R, H) before GELU
  Act act;             // (R, H) after GELU
  float* x_out;        // (R, D) residual stream out
};

// The parameters as the ops read them: the fp32 master copy (biases, LayerNorm, tokens, and the
// GEMMs' weights on a backend whose weight_dtype() is fp32) and, when the GEMMs read bf16
// weights, the bf16 copy of the same layout that AdamW keeps up to date.
struct Weights {
  const float* f32 = nullptr;      // (layout.total)
  const uint16_t* bf16 = nullptr;  // (layout.total), or null
  // the weight operand of a GEMM whose weight tensor starts at `offset`
  ActIn gemm(size_t offset) const { return bf16 ? ActIn(bf16 + offset, DType::kBF16) : ActIn(f32 + offset); }
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

// Bump allocator: take() hands out byte offsets (64-byte aligned) disguised as pointers, or as
// views of `count` elements of a DType; bytes() is then the plan's size, known before anything is
// allocated (a model's memory report reads it alone). Once allocated, rebase() turns each offset
// into a real pointer.
class ArenaPlanner {
 public:
  template <typename T> T* take(size_t count) { return reinterpret_cast<T*>(reserve(count * sizeof(T))); }
  Act take(size_t count, DType dtype) { return {reinterpret_cast<void*>(reserve(count * dtype_bytes(dtype))), dtype}; }
  size_t bytes() const { return bytes_; }

 private:
  uintptr_t reserve(size_t bytes) {
    const size_t offset = bytes_;
    bytes_ += (bytes + 63) & ~size_t(63);
    return offset;
  }
  size_t bytes_ = 0;
};

template <typename T> T* rebase(T* offset_ptr, char* base) {
  return reinterpret_cast<T*>(base + reinterpret_cast<uintptr_t>(offset_ptr));
}
inline Act rebase(Act offset_view, char* base) {
  return {base + reinterpret_cast<uintptr_t>(offset_view.data), offset_view.dtype};
}

// Plans `depth` blocks' activations for dims d (offsets; x_in left unset), the Act fields in
// `narrow` (the backend's activation_dtype()).
void plan_blocks(ArenaPlanner& pl, const StackDims& d, int depth, DType narrow, std::vector<BlockActs>& out);
// Turns the planned offsets into pointers into `base` and chains the residual stream: block 0
// reads x0, block l reads block l−1's x_out.
void rebase_blocks(std::vector<BlockActs>& blocks, char* base, const float* x0);

void block_forward(Backend& be, const Weights& w, const BlockOffsets& o, const BlockActs& a, const StackDims& d,
                   float eps, const DropPath& drop = {});
// dres (R, D) fp32: on entry d x_out, on exit d x_in (the residual stream gradient flows through
// both skip connections and the branches accumulate into it). wide (R, max(3D, H)) and narrow
// (R, D) are scratch in the activations' type (the GEMMs' input gradients); dbranch (R, D) fp32
// too, needed only under drop path.
void block_backward(Backend& be, const Weights& w, float* grads, const BlockOffsets& o, const BlockActs& a,
                    const StackDims& d, float* dres, Act wide, Act narrow, bool assign,
                    const DropPath& drop = {}, float* dbranch = nullptr);

}  // namespace emae
