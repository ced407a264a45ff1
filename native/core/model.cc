// EMAE forward and backward over the parallel parts (DESIGN.md §1). Shapes, with
//   B batch, K parts, V visible patches per part, N patches, P = p·p·C,
//   S = B·K sequences, T = 1+V encoder tokens, Td = 1+N decoder tokens,
//   R = S·T encoder rows, Rd = S·Td decoder rows, D / Dd widths, H / Hd MLP widths.
// Every part of every image is one sequence: each layer is one batched matmul over all of them.
#include "core/model.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/blocks.h"
#include "core/errors.h"

namespace emae {

struct Model::Arena {
  Backend* backend = nullptr;
  void* memory = nullptr;
  int batch = 0, parts = 0, visible = 0;
  bool decoder = true;  // false: an encoder-only plan (Model::encode)
  StackDims enc{}, dec{};
  float* images = nullptr;      // (B, C, H, W)
  int32_t* perm = nullptr;      // (B, N)
  // Act: stored in the backend's activation_dtype() (blocks.h); float*: always fp32
  Act cols;                     // (S·V, C·p·p)
  Act emb;                      // (S·V, D)
  float* x0 = nullptr;          // (R, D)
  std::vector<BlockActs> blocks;
  Act latent;                   // (R, D) after norm (fp32 in an encoder-only plan: encode's features)
  float* latent_mean = nullptr; // (R)
  float* latent_rstd = nullptr; // (R)
  Act y;                        // (R, Dd) decoder_embed output
  float* z0 = nullptr;          // (Rd, Dd)
  std::vector<BlockActs> dec_blocks;
  Act dnorm;                    // (Rd, Dd) after decoder_norm
  float* dnorm_mean = nullptr;  // (Rd)
  float* dnorm_rstd = nullptr;  // (Rd)
  Act pred;                     // (Rd, P)
  float* target = nullptr;      // (B, N, P)
  // backward scratch
  Act dpred;                    // (Rd, P)
  float* dres = nullptr;        // (max(R·D, Rd·Dd))
  Act wide;                     // (max(R·max(3D, H), Rd·max(3Dd, Hd)))
  Act narrow;                   // (max(R·D, Rd·Dd))
  Act dy;                       // (R, Dd)
  Act demb;                     // (S·V, D)
  ~Arena() {
    if (memory) backend->release(memory);
  }
};

namespace {
std::vector<float> initial_params(const ModelConfig& config, const ParamLayout& layout) {
  std::vector<float> host(layout.total);
  initialize_params(config, layout, host.data());
  return host;
}
}  // namespace

Model::Model(const ModelConfig& config, std::unique_ptr<Backend> backend)
    : config_(config),
      layout_((config.validate(), config)),
      backend_(std::move(backend)),
      state_(*backend_, layout_.total, initial_params(config_, layout_).data()) {
  for (const auto& s : layout_.specs)
    if (s.trainable) trainable_.push_back({s.offset, s.size, s.decay, 1.0});  // pretraining: one lr for all
  std::vector<size_t> assigned = {layout_.patch_w, layout_.dec_embed_w, layout_.dec_pred_w};
  for (const auto* stack : {&layout_.blocks, &layout_.dec_blocks})
    for (const BlockOffsets& b : *stack) assigned.insert(assigned.end(), {b.qkv_w, b.proj_w, b.fc1_w, b.fc2_w});
  accumulated_grads_ = accumulated_ranges(layout_.specs, assigned);
}

// the arenas go first (declared after state_), then state_ releases its buffers, then the backend
Model::~Model() = default;

PartGeometry Model::geometry(const Arena& a) const {
  PartGeometry g;
  g.batch = a.batch;
  g.parts = a.parts;
  g.visible = a.visible;
  g.num_patches = config_.num_patches();
  g.grid = config_.grid();
  g.patch = config_.patch_size;
  g.channels = config_.channels;
  g.image = config_.image_size;
  return g;
}

void Model::plan(int batch) {
  if (arena_ && arena_->batch == batch) return;
  arena_.reset();  // free the old plan before asking for the new one
  arena_ = make_arena(batch, config_.parts, config_.visible(), true);
}

// Plans (offsets, no memory) the activations for `batch` images in `parts` sequences of `visible`
// patches each; with `decoder` also the decoder, the losses and the backward scratch. The Act
// buffers in `narrow`, except an encoder-only plan's latent (encode downloads it as features).
std::unique_ptr<Model::Arena> Model::plan_arena(const ModelConfig& c, int batch, int parts, int visible, bool decoder,
                                                DType narrow, ArenaPlanner& pl) {
  const int K = parts, V = visible, N = c.num_patches(), P = c.patch_dim();
  const int S = batch * K;
  auto a = std::make_unique<Arena>();
  a->batch = batch;
  a->parts = parts;
  a->visible = visible;
  a->decoder = decoder;
  a->enc = {S, 1 + V, c.embed_dim, c.mlp_hidden, c.num_heads};
  a->dec = {S, 1 + N, c.decoder_embed_dim, c.decoder_mlp_hidden, c.decoder_num_heads};
  const int R = a->enc.rows(), Rd = a->dec.rows(), D = c.embed_dim, Dd = c.decoder_embed_dim;

  a->images = pl.take<float>((size_t)batch * c.channels * c.image_size * c.image_size);
  a->perm = pl.take<int32_t>((size_t)batch * N);
  a->cols = pl.take((size_t)S * V * c.channels * c.patch_size * c.patch_size, narrow);
  a->emb = pl.take((size_t)S * V * D, narrow);
  a->x0 = pl.take<float>((size_t)R * D);
  plan_blocks(pl, a->enc, c.depth, narrow, a->blocks);
  a->latent = pl.take((size_t)R * D, decoder ? narrow : DType::kF32);
  a->latent_mean = pl.take<float>(R);
  a->latent_rstd = pl.take<float>(R);
  if (decoder) {
    a->y = pl.take((size_t)R * Dd, narrow);
    a->z0 = pl.take<float>((size_t)Rd * Dd);
    plan_blocks(pl, a->dec, c.decoder_depth, narrow, a->dec_blocks);
    a->dnorm = pl.take((size_t)Rd * Dd, narrow);
    a->dnorm_mean = pl.take<float>(Rd);
    a->dnorm_rstd = pl.take<float>(Rd);
    a->pred = pl.take((size_t)Rd * P, narrow);
    a->target = pl.take<float>((size_t)batch * N * P);
    a->dpred = pl.take((size_t)Rd * P, narrow);
    const size_t res = std::max((size_t)R * D, (size_t)Rd * Dd);
    a->dres = pl.take<float>(res);
    a->narrow = pl.take(res, narrow);
    a->wide = pl.take(std::max((size_t)R * std::max(3 * D, c.mlp_hidden),
                               (size_t)Rd * std::max(3 * Dd, c.decoder_mlp_hidden)), narrow);
    a->dy = pl.take((size_t)R * Dd, narrow);
    a->demb = pl.take((size_t)S * V * D, narrow);
  }
  return a;
}

// plan_arena's plan, allocated in backend memory.
std::unique_ptr<Model::Arena> Model::make_arena(int batch, int parts, int visible, bool decoder) {
  ArenaPlanner pl;
  std::unique_ptr<Arena> a = plan_arena(config_, batch, parts, visible, decoder, backend_->activation_dtype(), pl);
  a->backend = backend_.get();
  a->memory = backend_->allocate(pl.bytes());
  char* base = static_cast<char*>(a->memory);
  auto fix = [&](auto& p) { p = rebase(p, base); };
  fix(a->images); fix(a->perm); fix(a->cols); fix(a->emb); fix(a->x0);
  fix(a->latent); fix(a->latent_mean); fix(a->latent_rstd);
  if (decoder) {
    fix(a->y); fix(a->z0); fix(a->dnorm); fix(a->dnorm_mean); fix(a->dnorm_rstd); fix(a->pred); fix(a->target);
    fix(a->dpred); fix(a->dres); fix(a->narrow); fix(a->wide); fix(a->dy); fix(a->demb);
  }
  rebase_blocks(a->blocks, base, a->x0);  // and chains the residual streams
  if (decoder) rebase_blocks(a->dec_blocks, base, a->z0);
  return a;
}

MemoryPlan Model::memory_plan(const ModelConfig& config, int batch, DType activations, DType weights) {
  config.validate();
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  const ParamLayout layout(config);
  ArenaPlanner pl;
  plan_arena(config, batch, config.parts, config.visible(), true, activations, pl);
  return memory_plan_of(layout.total, weights == DType::kBF16, pl.bytes());
}

MemoryPlan Model::memory(int batch) const {
  return memory_plan(config_, batch, backend_->activation_dtype(), backend_->weight_dtype());
}

void Model::forward_encoder(Arena& a) {
  Backend& be = *backend_;
  const ParamLayout& L = layout_;
  const PartGeometry g = geometry(a);
  const int D = config_.embed_dim;
  const int Cpp = config_.channels * config_.patch_size * config_.patch_size;
  const float eps = config_.layer_norm_eps;
  const Weights w = state_.weights();

  // encoder over the visible patches of every part
  be.gather_visible_patches(a.cols, a.images, a.perm, g);
  be.matmul_forward(a.emb, a.cols, w.gemm(L.patch_w), w.f32 + L.patch_b, nullptr, g.batch * g.parts * g.visible, Cpp,
                    D);
  be.encoder_tokens_forward(a.x0, a.emb, w.f32 + L.cls_token, w.f32 + L.pos_embed, a.perm, g, D);
  for (size_t l = 0; l < a.blocks.size(); ++l) block_forward(be, w, L.blocks[l], a.blocks[l], a.enc, eps);
  const float* x_last = a.blocks.empty() ? a.x0 : a.blocks.back().x_out;
  be.layernorm_forward(a.latent, a.latent_mean, a.latent_rstd, x_last, w.f32 + L.norm_w, w.f32 + L.norm_b,
                       a.enc.rows(), D, eps);
}

void Model::forward() {
  Backend& be = *backend_;
  Arena& a = *arena_;
  const ParamLayout& L = layout_;
  const PartGeometry g = geometry(a);
  const int D = config_.embed_dim, Dd = config_.decoder_embed_dim, P = config_.patch_dim();
  const float eps = config_.layer_norm_eps;
  const Weights w = state_.weights();
  forward_encoder(a);

  // decoder over all patches of every part
  be.matmul_forward(a.y, a.latent, w.gemm(L.dec_embed_w), w.f32 + L.dec_embed_b, nullptr, a.enc.rows(), D, Dd);
  be.decoder_tokens_forward(a.z0, a.y, w.f32 + L.mask_token, w.f32 + L.dec_pos_embed, a.perm, g, Dd);
  for (size_t l = 0; l < a.dec_blocks.size(); ++l) block_forward(be, w, L.dec_blocks[l], a.dec_blocks[l], a.dec, eps);
  const float* z_last = a.dec_blocks.empty() ? a.z0 : a.dec_blocks.back().x_out;
  be.layernorm_forward(a.dnorm, a.dnorm_mean, a.dnorm_rstd, z_last, w.f32 + L.dec_norm_w, w.f32 + L.dec_norm_b,
                       a.dec.rows(), Dd, eps);
  be.matmul_forward(a.pred, a.dnorm, w.gemm(L.dec_pred_w), w.f32 + L.dec_pred_b, nullptr, a.dec.rows(), Dd, P);

  // losses and their gradient w.r.t. the predictions
  be.patchify_target(a.target, a.images, g, config_.norm_pix_loss);
  be.loss_forward_backward(&state_.status->losses, a.dpred, a.pred, a.target, a.perm, g, lambda_, config_.consistency_l1);
}

void Model::backward(bool accumulate) {
  Backend& be = *backend_;
  Arena& a = *arena_;
  const ParamLayout& L = layout_;
  const PartGeometry g = geometry(a);
  const int D = config_.embed_dim, Dd = config_.decoder_embed_dim, P = config_.patch_dim();
  const int Cpp = config_.channels * config_.patch_size * config_.patch_size;
  const Weights w = state_.weights();
  float* dw = state_.grads;
  // A fresh step assigns the linear weights' gradients (their only contribution) and zeroes the
  // rest, which is added into below; accumulating micro-batches adds into everything.
  const bool assign = !accumulate;
  if (assign)
    for (const auto& [offset, size] : accumulated_grads_) be.zero(state_.grads + offset, size * sizeof(float));

  // decoder head
  be.matmul_backward(a.narrow, dw + L.dec_pred_w, dw + L.dec_pred_b, a.dpred, a.dnorm, w.gemm(L.dec_pred_w),
                     a.dec.rows(), Dd, P, assign);
  be.zero(a.dres, (size_t)a.dec.rows() * Dd * sizeof(float));
  const float* z_last = a.dec_blocks.empty() ? a.z0 : a.dec_blocks.back().x_out;
  be.layernorm_backward(a.dres, dw + L.dec_norm_w, dw + L.dec_norm_b, a.narrow, z_last, w.f32 + L.dec_norm_w,
                        a.dnorm_mean, a.dnorm_rstd, a.dec.rows(), Dd);
  for (size_t l = a.dec_blocks.size(); l-- > 0;)
    block_backward(be, w, dw, L.dec_blocks[l], a.dec_blocks[l], a.dec, a.dres, a.wide, a.narrow, assign);
  be.decoder_tokens_backward(a.dy, dw + L.mask_token, a.dres, a.perm, g, Dd);

  // encoder
  be.matmul_backward(a.narrow, dw + L.dec_embed_w, dw + L.dec_embed_b, a.dy, a.latent, w.gemm(L.dec_embed_w),
                     a.enc.rows(), D, Dd, assign);
  be.zero(a.dres, (size_t)a.enc.rows() * D * sizeof(float));
  const float* x_last = a.blocks.empty() ? a.x0 : a.blocks.back().x_out;
  be.layernorm_backward(a.dres, dw + L.norm_w, dw + L.norm_b, a.narrow, x_last, w.f32 + L.norm_w, a.latent_mean,
                        a.latent_rstd, a.enc.rows(), D);
  for (size_t l = a.blocks.size(); l-- > 0;)
    block_backward(be, w, dw, L.blocks[l], a.blocks[l], a.enc, a.dres, a.wide, a.narrow, assign);
  be.encoder_tokens_backward(a.demb, dw + L.cls_token, a.dres, a.perm, g, D);
  be.matmul_backward(nullptr, dw + L.patch_w, dw + L.patch_b, a.demb, a.cols, w.gemm(L.patch_w),
                     g.batch * g.parts * g.visible, Cpp, D, assign);
}

void Model::upload_batch(Arena& a, const float* images, const int32_t* perm) {
  const ModelConfig& c = config_;
  backend_->upload_input(a.images, images, (size_t)a.batch * c.channels * c.image_size * c.image_size * sizeof(float));
  backend_->upload_input(a.perm, perm, (size_t)a.batch * c.num_patches() * sizeof(int32_t));
}

void Model::forward_backward(const float* images, const int32_t* perm, int batch, float lambda, bool accumulate) {
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  plan(batch);
  upload_batch(*arena_, images, perm);
  lambda_ = lambda;
  forward();
  backward(accumulate);
}

LossValues Model::read_losses() const {
  LossValues losses;
  backend_->download(&losses, &state_.status->losses, sizeof(losses));
  return losses;
}

LossValues Model::loss_and_grads(const float* images, const int32_t* perm, int batch, float lambda, bool accumulate) {
  forward_backward(images, perm, batch, lambda, accumulate);
  return read_losses();
}

LossValues Model::predict(const float* images, const int32_t* perm, int batch, float lambda, float* pred) {
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  plan(batch);
  upload_batch(*arena_, images, perm);
  lambda_ = lambda;
  forward();
  download_f32(*backend_, pred, arena_->pred, (size_t)arena_->dec.rows() * config_.patch_dim());
  return read_losses();
}

void Model::encode(const float* images, int batch, float* features) {
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  const ModelConfig& c = config_;
  const int N = c.num_patches();
  if (!encode_arena_ || encode_arena_->batch != batch) {
    encode_arena_.reset();
    encode_arena_ = make_arena(batch, 1, N, false);  // one part that sees every patch, in order
  }
  Arena& a = *encode_arena_;
  std::vector<int32_t> identity((size_t)batch * N);
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = (int32_t)(i % N);
  upload_batch(a, images, identity.data());
  forward_encoder(a);
  backend_->download(features, a.latent.f32("features"), (size_t)a.enc.rows() * c.embed_dim * sizeof(float));
}

namespace {
std::string non_finite_loss_message(const LossValues& losses) {
  auto text = [](double v) {  // as JavaScript prints it, not C's "-nan"
    return std::isnan(v) ? std::string("NaN") : std::isinf(v) ? std::string(v > 0 ? "Infinity" : "-Infinity") : std::to_string(v);
  };
  return "the loss is not finite (loss " + text(losses.loss) + ", recon " + text(losses.recon) + ", consistency " +
         text(losses.consistency) + "); parameters and optimizer state were not updated";
}
}  // namespace

StepResult Model::train_step(const float* images, const int32_t* perm, int batch, float lambda,
                             const OptimOptions& opt) {
  forward_backward(images, perm, batch, lambda, false);
  // the losses stay in state_.status until adamw_step reads it back, after the optimizer
  return adamw_step(*backend_, state_.optimizer_buffers(), trainable_, opt, state_.step, non_finite_loss_message);
}

StepResult Model::apply_gradients(const OptimOptions& opt, float grad_scale) {
  if (grad_scale != 1.f) backend_->scale(state_.grads, trainable_.data(), (int)trainable_.size(), grad_scale);
  return adamw_step(*backend_, state_.optimizer_buffers(), trainable_, opt, state_.step, nullptr);
}

}  // namespace emae
