// Fine-tuning parameter registry and initialization (classifier_params.h).
#include "core/classifier_params.h"

#include <cmath>

#include "core/errors.h"
#include "core/rng.h"

namespace emae {

void ClassifierConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw RangeError("invalid classifier config: " + what);
  };
  need(image_size > 0 && patch_size > 0 && channels > 0, "imageSize, patchSize and channels must be positive");
  need(image_size % patch_size == 0, "imageSize must be divisible by patchSize");
  need(embed_dim > 0 && depth > 0 && num_heads > 0 && embed_dim % num_heads == 0,
       "embedDim must be a positive multiple of numHeads");
  need(mlp_hidden > 0, "mlpRatio must be positive");
  need(num_classes >= 2, "numClasses must be at least 2");
  need(drop_path >= 0 && drop_path < 1, "dropPath must be in [0, 1)");
  need(layer_norm_eps > 0, "layerNormEps must be positive");
  need(threads >= 1, "threads must be at least 1");
}

ClassifierLayout::ClassifierLayout(const ClassifierConfig& c) {
  auto add = [&](const std::string& name, std::vector<int> shape, int layer, bool decay) {
    ParamSpec s;
    s.name = name;
    s.shape = std::move(shape);
    s.size = 1;
    for (int d : s.shape) s.size *= (size_t)d;
    s.offset = total;
    s.trainable = true;
    s.decay = decay;
    s.layer = layer;
    total += s.size;
    specs.push_back(std::move(s));
    return specs.back().offset;
  };
  const int D = c.embed_dim, N = c.num_patches(), p = c.patch_size, H = c.mlp_hidden, top = c.depth + 1;
  // MAE's no-weight-decay set: 1-D tensors, biases, pos_embed and cls_token
  cls_token = add("cls_token", {1, 1, D}, 0, false);
  pos_embed = add("pos_embed", {1, N + 1, D}, 0, false);
  patch_w = add("patch_embed.proj.weight", {D, c.channels, p, p}, 0, true);
  patch_b = add("patch_embed.proj.bias", {D}, 0, false);
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    BlockOffsets o;
    o.norm1_w = add(b + ".norm1.weight", {D}, i + 1, false);
    o.norm1_b = add(b + ".norm1.bias", {D}, i + 1, false);
    o.qkv_w = add(b + ".attn.qkv.weight", {3 * D, D}, i + 1, true);
    o.qkv_b = add(b + ".attn.qkv.bias", {3 * D}, i + 1, false);
    o.proj_w = add(b + ".attn.proj.weight", {D, D}, i + 1, true);
    o.proj_b = add(b + ".attn.proj.bias", {D}, i + 1, false);
    o.norm2_w = add(b + ".norm2.weight", {D}, i + 1, false);
    o.norm2_b = add(b + ".norm2.bias", {D}, i + 1, false);
    o.fc1_w = add(b + ".mlp.fc1.weight", {H, D}, i + 1, true);
    o.fc1_b = add(b + ".mlp.fc1.bias", {H}, i + 1, false);
    o.fc2_w = add(b + ".mlp.fc2.weight", {D, H}, i + 1, true);
    o.fc2_b = add(b + ".mlp.fc2.bias", {D}, i + 1, false);
    blocks.push_back(o);
  }
  // models_vit registers norm before the head, fc_norm after it
  const std::string norm = c.global_pool ? "fc_norm" : "norm";
  if (!c.global_pool) {
    head_norm_w = add(norm + ".weight", {D}, top, false);
    head_norm_b = add(norm + ".bias", {D}, top, false);
  }
  head_w = add("head.weight", {c.num_classes, D}, top, true);
  head_b = add("head.bias", {c.num_classes}, top, false);
  if (c.global_pool) {
    head_norm_w = add(norm + ".weight", {D}, top, false);
    head_norm_b = add(norm + ".bias", {D}, top, false);
  }
}

void initialize_classifier(const ClassifierConfig& c, const ClassifierLayout& layout, float* params) {
  Rng rng(c.seed);
  for (const auto& s : layout.specs) {
    float* w = params + s.offset;
    if (s.name == "pos_embed") {
      sincos_pos_embed_2d(c.embed_dim, c.grid(), w);
    } else if (s.name == "cls_token") {
      for (size_t i = 0; i < s.size; ++i) w[i] = (float)(0.02 * rng.normal());
    } else if (s.name == "head.weight") {
      for (size_t i = 0; i < s.size; ++i) w[i] = (float)(2e-5 * rng.normal());
    } else if (s.shape.size() == 1) {
      // the 1-D weights are the LayerNorms' (1); every bias 0
      const bool ln_weight = s.name.size() >= 7 && s.name.compare(s.name.size() - 7, 7, ".weight") == 0;
      for (size_t i = 0; i < s.size; ++i) w[i] = ln_weight ? 1.f : 0.f;
    } else {
      const double fan_out = s.shape[0], fan_in = (double)s.size / s.shape[0];
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (size_t i = 0; i < s.size; ++i) w[i] = (float)((2.0 * rng.uniform() - 1.0) * bound);
    }
  }
}

}  // namespace emae
