// The fine-tuning model's configuration and parameter registry (DESIGN.md §3b): MAE's
// models_vit.VisionTransformer state dict in one flat buffer, each tensor with its layer id for
// MAE's layer-wise lr decay (util/lr_decay.py param_groups_lrd) and its weight-decay flag.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/params.h"

namespace emae {

struct ClassifierConfig {
  int image_size = 0, patch_size = 0, channels = 0;
  int embed_dim = 0, depth = 0, num_heads = 0, mlp_hidden = 0;
  int num_classes = 0;
  bool global_pool = true;  // mean of the patch tokens → fc_norm; else norm → cls token
  float drop_path = 0.f;    // stochastic depth rate of the last block (linear from 0 over the blocks)
  float layer_norm_eps = 1e-6f;
  uint32_t seed = 0;
  int threads = 1;
  bool cpu_bf16_matmul = false;

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int tokens() const { return 1 + num_patches(); }
  int patch_dim() const { return patch_size * patch_size * channels; }
  // drop-path rate of block i: drop_path · i / (depth − 1) (timm's linspace(0, rate, depth), which
  // is [0] for one block)
  float block_drop_rate(int i) const { return depth > 1 ? drop_path * (float)i / (float)(depth - 1) : 0.f; }

  void validate() const;  // throws RangeError naming the first violated invariant
};

struct ClassifierLayout {
  std::vector<ParamSpec> specs;
  size_t total = 0;
  size_t patch_w, patch_b, cls_token, pos_embed;
  std::vector<BlockOffsets> blocks;
  size_t head_norm_w, head_norm_b;  // fc_norm (global pool) or norm
  size_t head_w, head_b;

  explicit ClassifierLayout(const ClassifierConfig& c);
};

// A fresh classifier: MAE's pretraining initialization for the encoder (xavier-uniform linears,
// zero biases, LayerNorm (1, 0), cls token normal(0, 0.02), 2-D sin-cos pos_embed; so training
// from scratch starts where pretraining would), head normal(0, 2e-5) and zero bias (MAE's
// trunc_normal_(std=2e-5), whose ±2 bounds truncate nothing at that std). Deterministic for a seed.
void initialize_classifier(const ClassifierConfig& c, const ClassifierLayout& layout, float* params);

}  // namespace emae
