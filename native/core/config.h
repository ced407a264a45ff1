// Model configuration as the native core takes it. TypeScript validates and resolves it
// (lib/config.ts); validate() re-checks the invariants the core relies on, cheaply.
#pragma once
#include <cstdint>
#include <string>

namespace emae {

struct ModelConfig {
  int image_size = 0, patch_size = 0, channels = 0;
  int embed_dim = 0, depth = 0, num_heads = 0, mlp_hidden = 0;
  int decoder_embed_dim = 0, decoder_depth = 0, decoder_num_heads = 0, decoder_mlp_hidden = 0;
  int parts = 1, parts_total = 1;
  bool norm_pix_loss = true;
  bool consistency_l1 = false;  // consistencyDistance 'l1' (else 'mse')
  float layer_norm_eps = 1e-6f;
  uint32_t seed = 0;
  int threads = 1;
  bool cpu_bf16_matmul = false;  // cpuMatmul 'bf16': the CPU backend's GEMMs in bf16 (AMX or AVX512-BF16)

  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
  int patch_dim() const { return patch_size * patch_size * channels; }
  int visible() const { return num_patches() / parts_total; }

  // Throws ConfigError (a RangeError on the JS side) naming the first violated invariant.
  void validate() const;
};

}  // namespace emae
