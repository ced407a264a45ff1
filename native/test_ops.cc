// testOp(name, tensors, dims): runs one CPU op on Float64Array inputs for the op-level tests
// (finite differences in float64, GEMM checks in float32 with dims.fp32 = 1). Internal API,
// synchronous; inputs are validated here since no TS layer stands in front of it.
#include <napi.h>
#include <omp.h>

#include <algorithm>
#include <functional>
#include <cmath>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/classifier_ops.h"
#include "cpu/gemm.h"
#include "cpu/ops.h"
#include "napi_util.h"

namespace emae::napi {
namespace {

template <typename T> using Tensors = std::map<std::string, std::vector<T>>;

struct OpCall {
  Napi::Env env;
  Napi::Object tensors;
  Napi::Object dims;
};

template <typename T> struct OpContext {
  const OpCall& call;
  Tensors<T> in;
  Tensors<T> out;

  int dim(const char* key) const { return get_int(call.dims, key, 0); }
  int dim_or_zero(const char* key) const { return call.dims.Has(key) ? dim(key) : 0; }
  // dims.bf16 = 1 (with fp32 = 1): the GEMMs on the bf16 path (AMX or AVX512-BF16)
  bool bf16() const {
    if (!call.dims.Has("bf16") || get_int(call.dims, "bf16", 0) == 0) return false;
    if (!std::is_same_v<T, float>) throw Napi::RangeError::New(call.env, "testOp: bf16 needs fp32 = 1");
    std::string why;
    if (!emae::cpu::gemm_bf16_kernel_name(&why)) throw Napi::Error::New(call.env, "testOp: bf16 unavailable: " + why);
    return true;
  }
  double scalar(const char* key) const { return get_number(call.dims, key); }
  bool has(const char* key) const { return call.tensors.Has(key) && !call.tensors.Get(key).IsUndefined(); }
  // input tensor of exactly n elements
  const T* input(const char* key, size_t n) {
    auto arr = get_typed_array<double>(call.tensors.Get(key), key, (int64_t)n);
    auto& v = in[key];
    v.assign(arr.Data(), arr.Data() + n);
    return v.data();
  }
  const T* optional(const char* key, size_t n) { return has(key) ? input(key, n) : nullptr; }
  T* output(const char* key, size_t n) {
    auto& v = out[key];
    v.assign(n, T(0));
    return v.data();
  }
  // perm (B, N) with B·N = n: each row must be a permutation of 0..N−1 (a bad index would read
  // out of bounds in the gather, token and loss ops)
  std::vector<int32_t> perm(size_t n) {
    auto arr = get_typed_array<double>(call.tensors.Get("perm"), "perm", (int64_t)n);
    std::vector<int32_t> out(arr.Data(), arr.Data() + n);
    const PartGeometry g = geometry();
    const int N = g.num_patches;
    std::vector<uint8_t> seen(N);
    for (size_t r = 0; r * N < n; ++r) {
      std::fill(seen.begin(), seen.end(), 0);
      for (int i = 0; i < N; ++i) {
        const double v = arr[r * N + i];
        if (v != std::floor(v) || v < 0 || v >= N || seen[(int)v])
          throw Napi::RangeError::New(call.env, "testOp: perm row " + std::to_string(r) + " is not a permutation of 0.." +
                                                    std::to_string(N - 1));
        seen[(int)v] = 1;
      }
    }
    return out;
  }
  PartGeometry geometry() const {
    PartGeometry g;
    g.batch = dim("batch");
    g.parts = dim("parts");
    g.visible = dim("visible");
    g.patch = dim("patch");
    g.channels = dim("channels");
    g.image = dim("image");
    g.grid = g.image / std::max(1, g.patch);
    g.num_patches = g.grid * g.grid;
    if (g.batch < 1 || g.parts < 1 || g.patch < 1 || g.channels < 1 || g.image % g.patch != 0 ||
        g.parts * g.visible > g.num_patches)
      throw Napi::RangeError::New(call.env, "testOp: inconsistent part geometry");
    return g;
  }
};

template <typename T> void run_op(const std::string& name, OpContext<T>& c) {
  using namespace emae::cpu;
  if (name == "matmul_forward") {
    const int R = c.dim("R"), K = c.dim("K"), N = c.dim("N");
    const T* inp = c.input("inp", (size_t)R * K);
    const T* w = c.input("weight", (size_t)N * K);
    const T* bias = c.optional("bias", N);
    const T* residual = c.optional("residual", (size_t)R * N);
    matmul_forward(c.output("out", (size_t)R * N), inp, w, bias, residual, R, K, N, c.bf16());
  } else if (name == "matmul_backward") {
    const int R = c.dim("R"), K = c.dim("K"), N = c.dim("N");
    const T* dout = c.input("dout", (size_t)R * N);
    const T* inp = c.input("inp", (size_t)R * K);
    const T* w = c.input("weight", (size_t)N * K);
    T* dinp = c.output("dinp", (size_t)R * K);
    T* dw = c.output("dweight", (size_t)N * K);
    T* db = c.output("dbias", N);
    matmul_backward(dinp, dw, db, dout, inp, w, R, K, N, c.bf16());
  } else if (name == "matmul_gelu_forward") {
    const int R = c.dim("R"), K = c.dim("K"), N = c.dim("N");
    const T* inp = c.input("inp", (size_t)R * K);
    const T* w = c.input("weight", (size_t)N * K);
    const T* bias = c.optional("bias", N);
    matmul_gelu_forward(c.output("pre", (size_t)R * N), c.output("act", (size_t)R * N), inp, w, bias, R, K, N,
                        c.bf16());
  } else if (name == "matmul_backward_gelu") {
    const int R = c.dim("R"), K = c.dim("K"), N = c.dim("N");
    const T* dout = c.input("dout", (size_t)R * N);
    const T* inp = c.input("inp", (size_t)R * K);
    const T* w = c.input("weight", (size_t)N * K);
    const T* gelu_inp = c.input("geluInp", (size_t)R * K);
    T* dinp = c.output("dinp", (size_t)R * K);
    T* dw = c.output("dweight", (size_t)N * K);
    T* db = c.output("dbias", N);
    matmul_backward_gelu(dinp, dw, db, dout, inp, w, gelu_inp, R, K, N, c.bf16());
  } else if (name == "layernorm_forward") {
    const int R = c.dim("R"), C = c.dim("C");
    const T* inp = c.input("inp", (size_t)R * C);
    const T* w = c.input("weight", C);
    const T* b = c.input("bias", C);
    layernorm_forward(c.output("out", (size_t)R * C), c.output("mean", R), c.output("rstd", R), inp, w, b, R, C,
                      (T)c.scalar("eps"));
  } else if (name == "layernorm_backward") {
    const int R = c.dim("R"), C = c.dim("C");
    const T* dout = c.input("dout", (size_t)R * C);
    const T* inp = c.input("inp", (size_t)R * C);
    const T* w = c.input("weight", C);
    const T* mean = c.input("mean", R);
    const T* rstd = c.input("rstd", R);
    layernorm_backward(c.output("dinp", (size_t)R * C), c.output("dweight", C), c.output("dbias", C), dout, inp, w,
                       mean, rstd, R, C);
  } else if (name == "gelu_forward") {
    const int n = c.dim("n");
    const T* inp = c.input("inp", n);
    gelu_forward(c.output("out", n), inp, n);
  } else if (name == "gelu_backward") {
    const int n = c.dim("n");
    const T* inp = c.input("inp", n);
    const T* dout = c.input("dout", n);
    gelu_backward(c.output("dinp", n), inp, dout, n);
  } else if (name == "attention_forward" || name == "attention_backward") {
    const int S = c.dim("S"), Tn = c.dim("T"), H = c.dim("H"), dh = c.dim("dh");
    const size_t rows = (size_t)S * Tn, D = (size_t)H * dh;
    const T* qkv = c.input("qkv", rows * 3 * D);
    if (name == "attention_forward") {
      attention_forward(c.output("out", rows * D), c.output("lse", (size_t)S * H * Tn), qkv, S, Tn, H, dh);
    } else {
      const T* dout = c.input("dout", rows * D);
      const T* out = c.input("out", rows * D);
      const T* lse = c.input("lse", (size_t)S * H * Tn);
      attention_backward(c.output("dqkv", rows * 3 * D), dout, qkv, out, lse, S, Tn, H, dh);
    }
  } else if (name == "gather_visible_patches" || name == "patchify_target") {
    const PartGeometry g = c.geometry();
    const T* images = c.input("images", (size_t)g.batch * g.channels * g.image * g.image);
    const size_t P = (size_t)g.patch * g.patch * g.channels;
    if (name == "patchify_target") {
      patchify_target(c.output("target", (size_t)g.batch * g.num_patches * P), images, g, c.dim("normPix") != 0);
    } else {
      const auto perm = c.perm((size_t)g.batch * g.num_patches);
      gather_visible_patches(c.output("cols", (size_t)g.batch * g.parts * g.visible * P), images, perm.data(), g);
    }
  } else if (name == "encoder_tokens_forward" || name == "encoder_tokens_backward") {
    const PartGeometry g = c.geometry();
    const int D = c.dim("D");
    const size_t S = (size_t)g.batch * g.parts;
    const auto perm = c.perm((size_t)g.batch * g.num_patches);
    if (name == "encoder_tokens_forward") {
      const T* emb = c.input("emb", S * g.visible * D);
      const T* cls = c.input("cls", D);
      const T* pos = c.input("pos", (size_t)(1 + g.num_patches) * D);
      encoder_tokens_forward(c.output("x", S * (1 + g.visible) * D), emb, cls, pos, perm.data(), g, D);
    } else {
      const T* dx = c.input("dx", S * (1 + g.visible) * D);
      encoder_tokens_backward(c.output("demb", S * g.visible * D), c.output("dcls", D), dx, perm.data(), g, D);
    }
  } else if (name == "decoder_tokens_forward" || name == "decoder_tokens_backward") {
    const PartGeometry g = c.geometry();
    const int D = c.dim("D");
    const size_t S = (size_t)g.batch * g.parts;
    const auto perm = c.perm((size_t)g.batch * g.num_patches);
    if (name == "decoder_tokens_forward") {
      const T* y = c.input("y", S * (1 + g.visible) * D);
      const T* mask = c.input("mask", D);
      const T* pos = c.input("pos", (size_t)(1 + g.num_patches) * D);
      decoder_tokens_forward(c.output("z", S * (1 + g.num_patches) * D), y, mask, pos, perm.data(), g, D);
    } else {
      const T* dz = c.input("dz", S * (1 + g.num_patches) * D);
      decoder_tokens_backward(c.output("dy", S * (1 + g.visible) * D), c.output("dmask", D), dz, perm.data(), g, D);
    }
  } else if (name == "loss") {
    const PartGeometry g = c.geometry();
    const size_t P = (size_t)g.patch * g.patch * g.channels;
    const size_t S = (size_t)g.batch * g.parts;
    const auto perm = c.perm((size_t)g.batch * g.num_patches);
    const T* pred = c.input("pred", S * (1 + g.num_patches) * P);
    const T* target = c.input("target", (size_t)g.batch * g.num_patches * P);
    const LossValues l = loss_forward_backward(c.output("dpred", S * (1 + g.num_patches) * P), pred, target,
                                               perm.data(), g, (T)c.scalar("lambda"), c.dim("l1") != 0);
    *c.output("loss", 1) = (T)l.loss;
    *c.output("recon", 1) = (T)l.recon;
    *c.output("consistency", 1) = (T)l.consistency;
  } else if (name == "pool_tokens_forward" || name == "pool_tokens_backward") {
    const int S = c.dim("S"), Tn = c.dim("T"), D = c.dim("D");
    const bool mean = c.dim("mean") != 0;
    if (S < 1 || Tn < 2 || D < 1) throw Napi::RangeError::New(c.call.env, "testOp: pool needs S >= 1, T >= 2, D >= 1");
    if (name == "pool_tokens_forward")
      pool_tokens_forward(c.output("pooled", (size_t)S * D), c.input("x", (size_t)S * Tn * D), S, Tn, D, mean);
    else
      pool_tokens_backward(c.output("dx", (size_t)S * Tn * D), c.input("dpooled", (size_t)S * D), S, Tn, D, mean);
  } else if (name == "residual_scaled_forward" || name == "scale_rows") {
    const int S = c.dim("S"), n = c.dim("n");
    const T* keep = c.input("keep", S);
    const T* inp = c.input(name == "scale_rows" ? "inp" : "branch", (size_t)S * n);
    if (name == "scale_rows") {
      scale_rows(c.output("out", (size_t)S * n), inp, keep, S, n);
    } else {
      const T* res = c.input("res", (size_t)S * n);
      residual_scaled_forward(c.output("out", (size_t)S * n), res, inp, keep, S, n);
    }
  } else if (name == "cross_entropy") {
    const int B = c.dim("B"), C = c.dim("C");
    if (B < 1 || C < 1) throw Napi::RangeError::New(c.call.env, "testOp: cross_entropy needs B >= 1, C >= 1");
    const T* logits = c.input("logits", (size_t)B * C);
    const T* targets = c.input("targets", (size_t)B * C);
    T* dlogits = c.output("dlogits", (size_t)B * C);
    *c.output("loss", 1) = (T)cross_entropy_forward_backward(dlogits, logits, targets, B, C);
  } else if (name == "column_sum_accumulate") {
    const int R = c.dim("R"), C = c.dim("C");
    const T* src = c.input("src", (size_t)R * C);
    const T* dst0 = c.input("dst", C);
    T* dst = c.output("dst", C);
    std::copy(dst0, dst0 + C, dst);
    column_sum_accumulate(dst, src, R, C);
  } else if (name == "adamw") {
    // dims.lrScale (default 1): a segment's lr multiplier, applied as the backends do (segment_lr)
    const int n = c.dim("n");
    AdamWScalars s;
    s.lr = segment_lr((float)c.scalar("lr"), c.call.dims.Has("lrScale") ? c.scalar("lrScale") : 1.0);
    s.beta1 = (float)c.scalar("beta1");
    s.beta2 = (float)c.scalar("beta2");
    s.eps = (float)c.scalar("eps");
    s.weight_decay = (float)c.scalar("weightDecay");
    const int step = c.dim("step");
    s.bias_correction1 = (float)(1.0 - std::pow((double)s.beta1, step));
    s.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow((double)s.beta2, step));
    const bool decay = c.dim("decay") != 0;
    const T* p0 = c.input("param", n);
    const T* g = c.input("grad", n);
    const T* m0 = c.input("expAvg", n);
    const T* v0 = c.input("expAvgSq", n);
    T* p = c.output("param", n);
    T* m = c.output("expAvg", n);
    T* v = c.output("expAvgSq", n);
    for (int i = 0; i < n; ++i) {
      p[i] = p0[i];
      m[i] = m0[i];
      v[i] = v0[i];
      adamw_update(p[i], m[i], v[i], g[i], s, decay);
    }
  } else if (name == "gemm") {
    // gemm() itself in every layout: A stored (M, K) or, transA, (K, M); B (K, N) or, transB,
    // (N, K); every leading dimension `pad` wider than the rows; out = the whole C buffer
    // (M, N + pad), starting from c when given, so writes past the N columns show; threads (fp32):
    // the OpenMP team size for this call. float64: the plain triple loop in the fp32 path's order.
    const int M = c.dim("M"), N = c.dim("N"), K = c.dim("K"), pad = c.dim_or_zero("pad");
    const bool ta = c.dim_or_zero("transA") != 0, tb = c.dim_or_zero("transB") != 0;
    const bool accumulate = c.dim_or_zero("accumulate") != 0;
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const T* A = c.input("A", (size_t)(ta ? K : M) * lda);
    const T* B = c.input("B", (size_t)(tb ? N : K) * ldb);
    const T* bias = c.optional("bias", N);
    const T* residual = c.optional("residual", (size_t)M * ldc);
    const T* c0 = c.optional("c", (size_t)M * ldc);
    T* C = c.output("out", (size_t)M * ldc);
    if (c0) std::copy(c0, c0 + (size_t)M * ldc, C);
    if constexpr (std::is_same_v<T, float>) {
      GemmParams p;
      p.trans_a = ta, p.trans_b = tb, p.M = M, p.N = N, p.K = K;
      p.A = A, p.lda = lda, p.B = B, p.ldb = ldb, p.C = C, p.ldc = ldc;
      p.accumulate = accumulate, p.bf16 = c.bf16(), p.bias = bias, p.residual = residual;
      const int threads = c.dim_or_zero("threads"), before = omp_get_max_threads();
      if (threads > 0) omp_set_num_threads(threads);
      try {
        gemm(p);
      } catch (...) {
        omp_set_num_threads(before);
        throw;
      }
      omp_set_num_threads(before);
    } else {
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          T s = 0;
          for (int k = 0; k < K; ++k) s += (ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]) *
                                           (tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
          T& out = C[(size_t)i * ldc + j];
          out = (accumulate ? out : T(0)) + s + (bias ? bias[j] : T(0)) + (residual ? residual[(size_t)i * ldc + j] : T(0));
        }
    }
  } else {
    throw Napi::RangeError::New(c.call.env, "testOp: unknown op '" + name + "'");
  }
}

template <typename T> Napi::Object run(const std::string& name, const OpCall& call) {
  OpContext<T> ctx{call, {}, {}};
  run_op<T>(name, ctx);
  Napi::Object result = Napi::Object::New(call.env);
  for (auto& [key, values] : ctx.out) {
    auto arr = Napi::Float64Array::New(call.env, values.size());
    for (size_t i = 0; i < values.size(); ++i) arr[i] = (double)values[i];
    result.Set(key, arr);
  }
  return result;
}

}  // namespace

Napi::Value TestOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "Expected a string for name");
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  OpCall call{env, get_object(info[1], "tensors"), get_object(info[2], "dims")};
  const bool fp32 = call.dims.Has("fp32") && get_int(call.dims, "fp32", 0) != 0;
  return guard(env, "testOp", [&] { return fp32 ? run<float>(name, call) : run<double>(name, call); });
}

}  // namespace emae::napi
