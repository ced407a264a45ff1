// Parameter registry, MAE initialization and config validation.
#include "core/params.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/errors.h"
#include "core/rng.h"

namespace emae {

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw RangeError("invalid model config: " + what);
  };
  need(image_size > 0 && patch_size > 0 && channels > 0, "imageSize, patchSize and channels must be positive");
  need(image_size % patch_size == 0, "imageSize must be divisible by patchSize");
  need(embed_dim > 0 && depth > 0 && num_heads > 0 && embed_dim % num_heads == 0,
       "embedDim must be a positive multiple of numHeads");
  need(decoder_embed_dim > 0 && decoder_depth > 0 && decoder_num_heads > 0 &&
           decoder_embed_dim % decoder_num_heads == 0,
       "decoderEmbedDim must be a positive multiple of decoderNumHeads");
  need(embed_dim % 4 == 0 && decoder_embed_dim % 4 == 0, "embedDim and decoderEmbedDim must be multiples of 4");
  need(mlp_hidden > 0 && decoder_mlp_hidden > 0, "mlpRatio must be positive");
  need(parts_total >= 1 && num_patches() % parts_total == 0, "the patches must split evenly into the parts");
  need(parts >= 1 && parts <= parts_total, "parts must be in 1..partsTotal");
  need(visible() >= 1, "each part must see at least one patch");
  need(!norm_pix_loss || patch_dim() >= 2, "normPixLoss needs at least 2 values per patch");
  need(layer_norm_eps > 0, "layerNormEps must be positive");
  need(threads >= 1, "threads must be at least 1");
}

namespace {

size_t product(const std::vector<int>& shape) {
  size_t n = 1;
  for (int d : shape) n *= (size_t)d;
  return n;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

ParamLayout::ParamLayout(const ModelConfig& c) {
  auto add = [&](const std::string& name, std::vector<int> shape, bool trainable = true) {
    ParamSpec s;
    s.name = name;
    s.shape = std::move(shape);
    s.size = product(s.shape);
    s.offset = total;
    s.trainable = trainable;
    s.decay = trainable && s.shape.size() >= 2 && !ends_with(name, ".bias");
    total += s.size;
    specs.push_back(std::move(s));
    return specs.back().offset;
  };
  const int D = c.embed_dim, Dd = c.decoder_embed_dim, N = c.num_patches(), p = c.patch_size;
  auto add_block = [&](const std::string& prefix, int dim, int hidden) {
    BlockOffsets o;
    o.norm1_w = add(prefix + ".norm1.weight", {dim});
    o.norm1_b = add(prefix + ".norm1.bias", {dim});
    o.qkv_w = add(prefix + ".attn.qkv.weight", {3 * dim, dim});
    o.qkv_b = add(prefix + ".attn.qkv.bias", {3 * dim});
    o.proj_w = add(prefix + ".attn.proj.weight", {dim, dim});
    o.proj_b = add(prefix + ".attn.proj.bias", {dim});
    o.norm2_w = add(prefix + ".norm2.weight", {dim});
    o.norm2_b = add(prefix + ".norm2.bias", {dim});
    o.fc1_w = add(prefix + ".mlp.fc1.weight", {hidden, dim});
    o.fc1_b = add(prefix + ".mlp.fc1.bias", {hidden});
    o.fc2_w = add(prefix + ".mlp.fc2.weight", {dim, hidden});
    o.fc2_b = add(prefix + ".mlp.fc2.bias", {dim});
    return o;
  };
  // order of models_mae.py's state_dict
  cls_token = add("cls_token", {1, 1, D});
  pos_embed = add("pos_embed", {1, N + 1, D}, false);
  mask_token = add("mask_token", {1, 1, Dd});
  dec_pos_embed = add("decoder_pos_embed", {1, N + 1, Dd}, false);
  patch_w = add("patch_embed.proj.weight", {D, c.channels, p, p});
  patch_b = add("patch_embed.proj.bias", {D});
  for (int i = 0; i < c.depth; ++i) blocks.push_back(add_block("blocks." + std::to_string(i), D, c.mlp_hidden));
  norm_w = add("norm.weight", {D});
  norm_b = add("norm.bias", {D});
  dec_embed_w = add("decoder_embed.weight", {Dd, D});
  dec_embed_b = add("decoder_embed.bias", {Dd});
  for (int i = 0; i < c.decoder_depth; ++i)
    dec_blocks.push_back(add_block("decoder_blocks." + std::to_string(i), Dd, c.decoder_mlp_hidden));
  dec_norm_w = add("decoder_norm.weight", {Dd});
  dec_norm_b = add("decoder_norm.bias", {Dd});
  dec_pred_w = add("decoder_pred.weight", {c.patch_dim(), Dd});
  dec_pred_b = add("decoder_pred.bias", {c.patch_dim()});
}

const ParamSpec* ParamLayout::find(const std::string& name) const {
  for (const auto& s : specs)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<std::pair<size_t, size_t>> accumulated_ranges(const std::vector<ParamSpec>& specs,
                                                          const std::vector<size_t>& assigned) {
  std::vector<const ParamSpec*> rest;
  for (const auto& s : specs)
    if (s.trainable && std::find(assigned.begin(), assigned.end(), s.offset) == assigned.end()) rest.push_back(&s);
  std::sort(rest.begin(), rest.end(), [](const ParamSpec* x, const ParamSpec* y) { return x->offset < y->offset; });
  std::vector<std::pair<size_t, size_t>> ranges;
  for (const ParamSpec* s : rest) {
    if (!ranges.empty() && ranges.back().first + ranges.back().second == s->offset)
      ranges.back().second += s->size;  // adjacent: one zeroing call
    else
      ranges.push_back({s->offset, s->size});
  }
  return ranges;
}

void sincos_pos_embed_2d(int dim, int grid, float* out) {
  // half the channels encode grid[0], the other half grid[1]; MAE's meshgrid(grid_w, grid_h)
  // makes grid[0] the column index and grid[1] the row index. Each half is [sin | cos] of
  // pos · 10000^(−i / (dim/4)).
  const int half = dim / 2, quarter = dim / 4;
  for (int d = 0; d < dim; ++d) out[d] = 0.f;  // cls row
  for (int r = 0; r < grid; ++r)
    for (int col = 0; col < grid; ++col) {
      float* row = out + (size_t)(1 + r * grid + col) * dim;
      for (int h = 0; h < 2; ++h) {
        const double pos = h == 0 ? col : r;
        for (int i = 0; i < quarter; ++i) {
          const double omega = 1.0 / std::pow(10000.0, (double)i / quarter);
          row[h * half + i] = (float)std::sin(pos * omega);
          row[h * half + quarter + i] = (float)std::cos(pos * omega);
        }
      }
    }
}

void initialize_params(const ModelConfig& c, const ParamLayout& layout, float* params) {
  Rng rng(c.seed);
  for (const auto& s : layout.specs) {
    float* w = params + s.offset;
    if (s.name == "pos_embed") {
      sincos_pos_embed_2d(c.embed_dim, c.grid(), w);
    } else if (s.name == "decoder_pos_embed") {
      sincos_pos_embed_2d(c.decoder_embed_dim, c.grid(), w);
    } else if (s.name == "cls_token" || s.name == "mask_token") {
      for (size_t i = 0; i < s.size; ++i) w[i] = (float)(0.02 * rng.normal());
    } else if (s.shape.size() == 1) {
      // LayerNorm weight 1, every bias 0
      const bool ln_weight = ends_with(s.name, "norm1.weight") || ends_with(s.name, "norm2.weight") ||
                             s.name == "norm.weight" || s.name == "decoder_norm.weight";
      for (size_t i = 0; i < s.size; ++i) w[i] = ln_weight ? 1.f : 0.f;
    } else {
      // xavier uniform on the (fan_out, fan_in) view
      const double fan_out = s.shape[0], fan_in = (double)s.size / s.shape[0];
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (size_t i = 0; i < s.size; ++i) w[i] = (float)((2.0 * rng.uniform() - 1.0) * bound);
    }
  }
}

}  // namespace emae
