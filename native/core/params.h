// The parameter registry: every tensor of the MAE state dict, named as in
// facebookresearch/mae models_mae.py, laid out in one flat buffer (params, grads and the AdamW
// moments share the layout), plus MAE's initialization.
#pragma once
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"

namespace emae {

struct ParamSpec {
  std::string name;
  std::vector<int> shape;
  size_t offset = 0;  // in floats, into the flat buffer
  size_t size = 0;
  bool trainable = true;  // false: the fixed sin-cos positional embeddings
  bool decay = true;      // AdamW weight decay: ndim >= 2 and not a bias (timm add_weight_decay)
  int layer = 0;          // fine-tuning's layer id for the layer-wise lr decay (classifier.h)
};

// Offsets of one transformer block's tensors.
struct BlockOffsets {
  size_t norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b;
};

struct ParamLayout {
  std::vector<ParamSpec> specs;
  size_t total = 0;
  size_t patch_w, patch_b, cls_token, pos_embed;
  std::vector<BlockOffsets> blocks;
  size_t norm_w, norm_b, dec_embed_w, dec_embed_b, mask_token, dec_pos_embed;
  std::vector<BlockOffsets> dec_blocks;
  size_t dec_norm_w, dec_norm_b, dec_pred_w, dec_pred_b;

  explicit ParamLayout(const ModelConfig& c);
  const ParamSpec* find(const std::string& name) const;
};

// The (offset, size) ranges of the trainable tensors other than `assigned` (the linear weights
// whose gradients matmul_backward assigns in a fresh step), merged where adjacent: what a
// non-accumulating backward zeroes first, since every other gradient is added into.
std::vector<std::pair<size_t, size_t>> accumulated_ranges(const std::vector<ParamSpec>& specs,
                                                          const std::vector<size_t>& assigned);

// MAE initialization into a host buffer of layout.total floats: xavier-uniform linears (the
// patch embedding viewed as a linear map), zero biases, LayerNorm (1, 0), cls/mask tokens
// normal(0, 0.02), fixed 2-D sin-cos positional embeddings. Deterministic for a seed.
void initialize_params(const ModelConfig& c, const ParamLayout& layout, float* params);

// MAE util/pos_embed.py get_2d_sincos_pos_embed(dim, grid, cls_token=True): (1 + grid², dim)
void sincos_pos_embed_2d(int dim, int grid, float* out);

}  // namespace emae
