// Fine-tuning forward and backward (classifier.h). Shapes, with
//   B batch, N patches, T = 1 + N tokens, R = B·T rows, D width, H MLP width, Q classes,
//   P = C·p·p values per patch.
// Every image is one sequence of all its patches: the pretraining encoder's path with one part
// that sees everything (identity permutation), so the gather and token ops are shared with it.
#include "core/classifier.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/blocks.h"
#include "core/errors.h"

namespace emae {

struct Classifier::Arena {
  Backend* backend = nullptr;
  void* memory = nullptr;
  int batch = 0;
  bool backward = false;
  StackDims enc{};
  float* images = nullptr;     // (B, C, H, W)
  int32_t* perm = nullptr;     // (B, N) identity: every patch, in order
  // Act: stored in the backend's activation_dtype() (blocks.h); float*: always fp32
  Act cols;                    // (B·N, P)
  Act emb;                     // (B·N, D)
  float* x0 = nullptr;         // (R, D)
  std::vector<BlockActs> blocks;
  float* pooled = nullptr;     // (B, D) mean of the patch tokens, or the cls token
  Act feat;                    // (B, D) after fc_norm / norm
  float* feat_mean = nullptr;  // (B)
  float* feat_rstd = nullptr;  // (B)
  float* logits = nullptr;     // (B, Q)
  float* targets = nullptr;    // (B, Q)
  float* keep = nullptr;       // (depth, 2, B) drop-path factors
  // backward
  float* dlogits = nullptr;    // (B, Q)
  Act dfeat;                   // (B, D)
  float* dpooled = nullptr;    // (B, D)
  float* dres = nullptr;       // (R, D)
  Act wide;                    // (R, max(3D, H))
  Act narrow;                  // (R, D)
  float* dbranch = nullptr;    // (R, D), only with drop path
  Act demb;                    // (B·N, D)
  ~Arena() {
    if (memory) backend->release(memory);
  }
};

namespace {
std::vector<float> initial_params(const ClassifierConfig& config, const ClassifierLayout& layout) {
  std::vector<float> host(layout.total);
  initialize_classifier(config, layout, host.data());
  return host;
}
}  // namespace

Classifier::Classifier(const ClassifierConfig& config, std::unique_ptr<Backend> backend)
    : config_(config),
      layout_((config.validate(), config)),
      backend_(std::move(backend)),
      state_(*backend_, layout_.total, initial_params(config_, layout_).data()) {
  for (const auto& s : layout_.specs) {
    trainable_.push_back({s.offset, s.size, s.decay, 1.0});  // layer decay 1 until apply_gradients says otherwise
    segment_layers_.push_back(s.layer);
  }
  std::vector<size_t> assigned = {layout_.patch_w, layout_.head_w};
  for (const BlockOffsets& b : layout_.blocks) assigned.insert(assigned.end(), {b.qkv_w, b.proj_w, b.fc1_w, b.fc2_w});
  accumulated_grads_ = accumulated_ranges(layout_.specs, assigned);
}

// the arenas go first (declared after state_), then state_ releases its buffers, then the backend
Classifier::~Classifier() = default;

// Plans (offsets, no memory) the activations for `batch` images, with the backward's buffers when
// `backward`; the Act buffers in `narrow`.
std::unique_ptr<Classifier::Arena> Classifier::plan_arena(const ClassifierConfig& c, int batch, bool backward,
                                                          DType narrow, ArenaPlanner& pl) {
  const int B = batch, N = c.num_patches(), T = c.tokens(), D = c.embed_dim, Q = c.num_classes, P = c.patch_dim();
  auto a = std::make_unique<Arena>();
  a->batch = batch;
  a->backward = backward;
  a->enc = {B, T, D, c.mlp_hidden, c.num_heads};
  const size_t R = a->enc.rows();

  a->images = pl.take<float>((size_t)B * c.channels * c.image_size * c.image_size);
  a->perm = pl.take<int32_t>((size_t)B * N);
  a->cols = pl.take((size_t)B * N * P, narrow);
  a->emb = pl.take((size_t)B * N * D, narrow);
  a->x0 = pl.take<float>(R * D);
  plan_blocks(pl, a->enc, c.depth, narrow, a->blocks);
  a->pooled = pl.take<float>((size_t)B * D);
  a->feat = pl.take((size_t)B * D, narrow);
  a->feat_mean = pl.take<float>(B);
  a->feat_rstd = pl.take<float>(B);
  a->logits = pl.take<float>((size_t)B * Q);
  if (backward) {
    a->targets = pl.take<float>((size_t)B * Q);
    a->keep = pl.take<float>((size_t)c.depth * 2 * B);
    a->dlogits = pl.take<float>((size_t)B * Q);
    a->dfeat = pl.take((size_t)B * D, narrow);
    a->dpooled = pl.take<float>((size_t)B * D);
    a->dres = pl.take<float>(R * D);
    a->wide = pl.take(R * std::max(3 * D, c.mlp_hidden), narrow);
    a->narrow = pl.take(R * D, narrow);
    if (c.drop_path > 0) a->dbranch = pl.take<float>(R * D);  // drop path's scaled branch gradients
    a->demb = pl.take((size_t)B * N * D, narrow);
  }
  return a;
}

// plan_arena's plan, allocated in backend memory, with the identity permutation uploaded.
std::unique_ptr<Classifier::Arena> Classifier::make_arena(int batch, bool backward) {
  const ClassifierConfig& c = config_;
  const int B = batch, N = c.num_patches();
  ArenaPlanner pl;
  std::unique_ptr<Arena> a = plan_arena(c, batch, backward, backend_->activation_dtype(), pl);
  a->backend = backend_.get();
  a->memory = backend_->allocate(pl.bytes());
  char* base = static_cast<char*>(a->memory);
  auto fix = [&](auto& p) { p = rebase(p, base); };
  fix(a->images); fix(a->perm); fix(a->cols); fix(a->emb); fix(a->x0);
  fix(a->pooled); fix(a->feat); fix(a->feat_mean); fix(a->feat_rstd); fix(a->logits);
  if (backward) {
    fix(a->targets); fix(a->keep); fix(a->dlogits); fix(a->dfeat); fix(a->dpooled);
    fix(a->dres); fix(a->wide); fix(a->narrow); fix(a->demb);
    if (c.drop_path > 0) fix(a->dbranch);
  }
  rebase_blocks(a->blocks, base, a->x0);
  std::vector<int32_t> identity((size_t)B * N);
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = (int32_t)(i % N);
  backend_->upload(a->perm, identity.data(), identity.size() * sizeof(int32_t));
  return a;
}

MemoryPlan Classifier::memory_plan(const ClassifierConfig& config, int batch, DType activations, DType weights) {
  config.validate();
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  const ClassifierLayout layout(config);
  ArenaPlanner pl;
  plan_arena(config, batch, true, activations, pl);
  return memory_plan_of(layout.total, weights == DType::kBF16, pl.bytes());
}

MemoryPlan Classifier::memory(int batch) const {
  return memory_plan(config_, batch, backend_->activation_dtype(), backend_->weight_dtype());
}

Classifier::Arena& Classifier::arena_for(int batch, bool backward) {
  if (batch < 1) throw RangeError("batchSize must be at least 1");
  auto& slot = backward ? train_arena_ : predict_arena_;
  if (!slot || slot->batch != batch) {
    slot.reset();  // free the old plan before asking for the new one
    slot = make_arena(batch, backward);
  }
  return *slot;
}

namespace {
PartGeometry all_patches(const ClassifierConfig& c, int batch) {
  PartGeometry g;
  g.batch = batch;
  g.parts = 1;
  g.visible = c.num_patches();
  g.num_patches = c.num_patches();
  g.grid = c.grid();
  g.patch = c.patch_size;
  g.channels = c.channels;
  g.image = c.image_size;
  return g;
}
}  // namespace

void Classifier::forward(Arena& a, bool drop_path) {
  Backend& be = *backend_;
  const ClassifierConfig& c = config_;
  const ClassifierLayout& L = layout_;
  const PartGeometry g = all_patches(c, a.batch);
  const int B = a.batch, D = c.embed_dim, N = c.num_patches(), T = c.tokens();
  const Weights w = state_.weights();

  be.gather_visible_patches(a.cols, a.images, a.perm, g);
  be.matmul_forward(a.emb, a.cols, w.gemm(L.patch_w), w.f32 + L.patch_b, nullptr, B * N, c.patch_dim(), D);
  be.encoder_tokens_forward(a.x0, a.emb, w.f32 + L.cls_token, w.f32 + L.pos_embed, a.perm, g, D);
  for (int l = 0; l < c.depth; ++l) {
    DropPath drop;
    if (drop_path && c.block_drop_rate(l) > 0) drop = {a.keep + (size_t)(2 * l) * B, a.keep + (size_t)(2 * l + 1) * B};
    block_forward(be, w, L.blocks[l], a.blocks[l], a.enc, c.layer_norm_eps, drop);
  }
  const float* x_last = a.blocks.empty() ? a.x0 : a.blocks.back().x_out;
  // pool, then normalize: norm(x)[cls] = norm(x[cls]) row-wise, so the cls path needs B rows, not B·T
  be.pool_tokens_forward(a.pooled, x_last, B, T, D, c.global_pool);
  be.layernorm_forward(a.feat, a.feat_mean, a.feat_rstd, a.pooled, w.f32 + L.head_norm_w, w.f32 + L.head_norm_b, B, D,
                       c.layer_norm_eps);
  be.matmul_forward(a.logits, a.feat, w.gemm(L.head_w), w.f32 + L.head_b, nullptr, B, D, c.num_classes);
}

void Classifier::backward(Arena& a, bool drop_path) {
  Backend& be = *backend_;
  const ClassifierConfig& c = config_;
  const ClassifierLayout& L = layout_;
  const PartGeometry g = all_patches(c, a.batch);
  const int B = a.batch, D = c.embed_dim, N = c.num_patches(), T = c.tokens(), Q = c.num_classes;
  const Weights w = state_.weights();
  float* dw = state_.grads;

  // a non-finite loss runs the backward too (the host does not know it yet): the optimizer refuses
  // the step from the status, and the gradients' owner reports them as not meaningful
  be.cross_entropy_forward_backward(&state_.status->losses.loss, a.dlogits, a.logits, a.targets, B, Q);
  // the linear weights' gradients are assigned (their only contribution); the rest are added into
  for (const auto& [offset, size] : accumulated_grads_) be.zero(state_.grads + offset, size * sizeof(float));
  be.matmul_backward(a.dfeat, dw + L.head_w, dw + L.head_b, a.dlogits, a.feat, w.gemm(L.head_w), B, D, Q, true);
  be.zero(a.dpooled, (size_t)B * D * sizeof(float));
  be.layernorm_backward(a.dpooled, dw + L.head_norm_w, dw + L.head_norm_b, a.dfeat, a.pooled, w.f32 + L.head_norm_w,
                        a.feat_mean, a.feat_rstd, B, D);
  be.pool_tokens_backward(a.dres, a.dpooled, B, T, D, c.global_pool);
  for (int l = c.depth; l-- > 0;) {
    DropPath drop;
    if (drop_path && c.block_drop_rate(l) > 0) drop = {a.keep + (size_t)(2 * l) * B, a.keep + (size_t)(2 * l + 1) * B};
    block_backward(be, w, dw, L.blocks[l], a.blocks[l], a.enc, a.dres, a.wide, a.narrow, true, drop, a.dbranch);
  }
  // x0 = tokens + pos_embed: pos_embed's gradient sums dx0 over the batch; the cls token gets row 0's
  be.column_sum_accumulate(dw + L.pos_embed, a.dres, B, T * D);
  be.encoder_tokens_backward(a.demb, dw + L.cls_token, a.dres, a.perm, g, D);
  be.matmul_backward(nullptr, dw + L.patch_w, dw + L.patch_b, a.demb, a.cols, w.gemm(L.patch_w), B * N,
                     c.patch_dim(), D, true);
}

void Classifier::forward_backward(const float* images, const float* targets, const float* keep, int batch) {
  Arena& a = arena_for(batch, true);
  const ClassifierConfig& c = config_;
  backend_->upload_input(a.images, images, (size_t)batch * c.channels * c.image_size * c.image_size * sizeof(float));
  backend_->upload_input(a.targets, targets, (size_t)batch * c.num_classes * sizeof(float));
  const bool drop = keep != nullptr && c.drop_path > 0;
  if (drop) backend_->upload_input(a.keep, keep, (size_t)c.depth * 2 * batch * sizeof(float));
  forward(a, drop);
  backward(a, drop);
}

double Classifier::loss_and_grads(const float* images, const float* targets, const float* keep, int batch) {
  forward_backward(images, targets, keep, batch);
  double loss = 0;
  backend_->download(&loss, &state_.status->losses.loss, sizeof(loss));
  return loss;
}

void Classifier::predict(const float* images, int batch, float* logits) {
  Arena& a = arena_for(batch, false);
  const ClassifierConfig& c = config_;
  backend_->upload_input(a.images, images, (size_t)batch * c.channels * c.image_size * c.image_size * sizeof(float));
  forward(a, false);
  backend_->download(logits, a.logits, (size_t)batch * c.num_classes * sizeof(float));
}

namespace {
std::string non_finite_loss_message(const LossValues& losses) {
  return std::string("the loss is not finite (") + (std::isnan(losses.loss) ? "NaN" : "Infinity") +
         "); parameters and optimizer state were not updated";
}
}  // namespace

StepResult Classifier::train_step(const float* images, const float* targets, const float* keep, int batch,
                                  const FinetuneOptim& opt) {
  forward_backward(images, targets, keep, batch);
  // the loss stays in state_.status until adamw_step reads it back, after the optimizer
  return optimizer_step(opt, non_finite_loss_message);
}

void Classifier::set_layer_decay(float layer_decay) {
  if (layer_decay == layer_decay_) return;  // the segment list stays the same (a device backend keeps it)
  const int top = config_.depth + 1;
  for (size_t i = 0; i < trainable_.size(); ++i)  // MAE's param_groups_lrd: one lr per layer id
    trainable_[i].lr_scale = std::pow((double)layer_decay, (double)(top - segment_layers_[i]));
  layer_decay_ = layer_decay;
}

StepResult Classifier::apply_gradients(const FinetuneOptim& opt) { return optimizer_step(opt, nullptr); }

StepResult Classifier::optimizer_step(const FinetuneOptim& opt, LossMessage loss_message) {
  set_layer_decay(opt.layer_decay);
  return adamw_step(*backend_, state_.optimizer_buffers(), trainable_, opt.adamw, state_.step, loss_message);
}

}  // namespace emae
