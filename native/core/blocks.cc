// The transformer block's forward and backward (blocks.h).
#include "core/blocks.h"

#include <stdexcept>

#include "core/errors.h"

namespace emae {

void plan_blocks(ArenaPlanner& pl, const StackDims& d, int depth, DType narrow, std::vector<BlockActs>& out) {
  const size_t rows = d.rows();
  for (int l = 0; l < depth; ++l) {
    BlockActs b{};
    b.ln1 = pl.take(rows * d.D, narrow);
    b.ln1_mean = pl.take<float>(rows);
    b.ln1_rstd = pl.take<float>(rows);
    b.qkv = pl.take(rows * 3 * d.D, narrow);
    b.att = pl.take(rows * d.D, narrow);
    b.lse = pl.take<float>((size_t)d.S * d.heads * d.T);
    b.x_mid = pl.take<float>(rows * d.D);
    b.ln2 = pl.take(rows * d.D, narrow);
    b.ln2_mean = pl.take<float>(rows);
    b.ln2_rstd = pl.take<float>(rows);
    b.fc1 = pl.take(rows * d.H, narrow);
    b.act = pl.take(rows * d.H, narrow);
    b.x_out = pl.take<float>(rows * d.D);
    out.push_back(b);
  }
}

void rebase_blocks(std::vector<BlockActs>& blocks, char* base, const float* x0) {
  for (auto& b : blocks) {
    for (Act* v : {&b.ln1, &b.qkv, &b.att, &b.ln2, &b.fc1, &b.act}) *v = rebase(*v, base);
    for (float** p : {&b.ln1_mean, &b.ln1_rstd, &b.lse, &b.x_mid, &b.ln2_mean, &b.ln2_rstd, &b.x_out})
      *p = rebase(*p, base);
  }
  for (size_t l = 0; l < blocks.size(); ++l) blocks[l].x_in = l == 0 ? x0 : blocks[l - 1].x_out;
}

void block_forward(Backend& be, const Weights& w, const BlockOffsets& o, const BlockActs& a, const StackDims& d,
                   float eps, const DropPath& drop) {
  const int R = d.rows(), D = d.D, H = d.H;
  const size_t per_seq = (size_t)d.T * D;
  be.layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.x_in, w.f32 + o.norm1_w, w.f32 + o.norm1_b, R, D, eps);
  be.matmul_forward(a.qkv, a.ln1, w.gemm(o.qkv_w), w.f32 + o.qkv_b, nullptr, R, D, 3 * D);
  be.attention_forward(a.att, a.lse, a.qkv, d.S, d.T, d.heads, D / d.heads);
  if (drop.attn) {  // x_mid = x_in + keep ⊙ proj(att)
    be.matmul_forward(a.x_mid, a.att, w.gemm(o.proj_w), w.f32 + o.proj_b, nullptr, R, D, D);
    be.residual_scaled_forward(a.x_mid, a.x_in, a.x_mid, drop.attn, d.S, per_seq);
  } else {
    be.matmul_forward(a.x_mid, a.att, w.gemm(o.proj_w), w.f32 + o.proj_b, a.x_in, R, D, D);
  }
  be.layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, w.f32 + o.norm2_w, w.f32 + o.norm2_b, R, D, eps);
  be.matmul_gelu_forward(a.fc1, a.act, a.ln2, w.gemm(o.fc1_w), w.f32 + o.fc1_b, R, D, H);
  if (drop.mlp) {  // x_out = x_mid + keep ⊙ fc2(act)
    be.matmul_forward(a.x_out, a.act, w.gemm(o.fc2_w), w.f32 + o.fc2_b, nullptr, R, H, D);
    be.residual_scaled_forward(a.x_out, a.x_mid, a.x_out, drop.mlp, d.S, per_seq);
  } else {
    be.matmul_forward(a.x_out, a.act, w.gemm(o.fc2_w), w.f32 + o.fc2_b, a.x_mid, R, H, D);
  }
}

void block_backward(Backend& be, const Weights& w, float* grads, const BlockOffsets& o, const BlockActs& a,
                    const StackDims& d, float* dres, Act wide, Act narrow, bool assign, const DropPath& drop,
                    float* dbranch) {
  const int R = d.rows(), D = d.D, H = d.H;
  const size_t per_seq = (size_t)d.T * D;
  if ((drop.attn || drop.mlp) && !dbranch) throw std::logic_error("block_backward: drop path needs dbranch scratch");
  // MLP branch: its output gradient is dres, scaled per sequence under drop path
  const float* dmlp = dres;
  if (drop.mlp) {
    be.scale_rows(dbranch, dres, drop.mlp, d.S, per_seq);
    dmlp = dbranch;
  }
  be.matmul_backward_gelu(wide, grads + o.fc2_w, grads + o.fc2_b, dmlp, a.act, w.gemm(o.fc2_w), a.fc1, R, H, D, assign);
  be.matmul_backward(narrow, grads + o.fc1_w, grads + o.fc1_b, wide, a.ln2, w.gemm(o.fc1_w), R, D, H, assign);
  be.layernorm_backward(dres, grads + o.norm2_w, grads + o.norm2_b, narrow, a.x_mid, w.f32 + o.norm2_w,
                        a.ln2_mean, a.ln2_rstd, R, D);
  // attention branch
  const float* dattn = dres;
  if (drop.attn) {
    be.scale_rows(dbranch, dres, drop.attn, d.S, per_seq);
    dattn = dbranch;
  }
  be.matmul_backward(narrow, grads + o.proj_w, grads + o.proj_b, dattn, a.att, w.gemm(o.proj_w), R, D, D, assign);
  be.attention_backward(wide, narrow, a.qkv, a.att, a.lse, d.S, d.T, d.heads, D / d.heads);
  be.matmul_backward(narrow, grads + o.qkv_w, grads + o.qkv_b, wide, a.ln1, w.gemm(o.qkv_w), R, D, 3 * D, assign);
  be.layernorm_backward(dres, grads + o.norm1_w, grads + o.norm1_b, narrow, a.x_in, w.f32 + o.norm1_w,
                        a.ln1_mean, a.ln1_rstd, R, D);
}

}  // namespace emae
