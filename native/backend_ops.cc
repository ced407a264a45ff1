// testBackendOp(device, name, tensors, dims): runs one Backend op (float32) on the CPU or the
// CUDA backend, for the parity tests: the same call on both backends must agree. Outputs that
// an op assigns are poisoned with NaN first, so an element the op fails to write shows up;
// outputs it accumulates into start from the tensor of the same name, or zeros. Internal API.
// dims.bf16 = 1: the backend stores activations in bf16 (issue 11; CUDA's bf16 storage, or the
// CPU's reference of it), so a device run can pin a faulty bf16 kernel on one op: the arguments
// that are views (Act, ActIn in core/backend.h; GEMM weights too, as the model passes its bf16
// weight copy) are given and returned as fp32 here, rounded to bf16 in backend memory on the way
// in and widened on the host on the way out; fp32 arguments stay fp32 (so does matmul_forward's out
// when a residual is given: the residual stream; and the GEMM backwards' dout with dims.doutF32 = 1:
// the residual stream's gradient, the classifier's dlogits). AdamW then also writes the bf16 weight
// copy, returned as paramBf16. matmul_backward with dims.noDinp = 1 gets no dinp (nullptr), as the
// patch embedding's backward does, and returns none.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cpu/bf16_reference_backend.h"
#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "napi_util.h"

namespace emae::napi {
namespace {

class Runner {
 public:
  Runner(Backend& be, Napi::Env env, Napi::Object tensors, Napi::Object dims, DType storage)
      : be_(be), env_(env), tensors_(tensors), dims_(dims), storage_(storage) {}
  ~Runner() {
    for (void* p : allocations_) be_.release(p);
  }

  int dim(const char* key) const { return get_int(dims_, key, 0); }
  double scalar(const char* key) const { return get_number(dims_, key); }
  bool has(const char* key) const { return tensors_.Has(key) && !tensors_.Get(key).IsUndefined(); }
  Napi::Value tensor(const char* key) const { return tensors_.Get(key); }

  const float* in(const char* key, size_t n) {
    auto arr = get_typed_array<float>(tensors_.Get(key), key, (int64_t)n);
    return static_cast<const float*>(place(arr.Data(), n * sizeof(float)));
  }
  const float* optional(const char* key, size_t n) { return has(key) ? in(key, n) : nullptr; }
  const int32_t* perm(size_t n) {
    auto arr = get_typed_array<int32_t>(tensors_.Get("perm"), "perm", (int64_t)n);
    return static_cast<const int32_t*>(place(arr.Data(), n * sizeof(int32_t)));
  }
  // an output the op assigns: NaN-poisoned
  float* out(const char* key, size_t n) {
    std::vector<float> init(n, std::numeric_limits<float>::quiet_NaN());
    return track(key, static_cast<float*>(place(init.data(), n * sizeof(float))), n);
  }
  // an input the backend may store narrow (an ActIn): in bf16 storage rounded in backend memory
  ActIn view_in(const char* key, size_t n) {
    const float* wide = in(key, n);
    if (storage_ == DType::kF32) return wide;
    uint16_t* bits = scratch<uint16_t>(n);
    be_.convert_to_bf16(bits, wide, n);
    return {bits, DType::kBF16};
  }
  // an output the op assigns that the backend may store narrow (an Act): NaN-poisoned
  Act view_out(const char* key, size_t n) {
    if (storage_ == DType::kF32) return out(key, n);
    std::vector<uint16_t> init(n, bf16_from_float(std::numeric_limits<float>::quiet_NaN()));
    void* p = place(init.data(), n * sizeof(uint16_t));
    outputs_[key] = {p, n, DType::kBF16};
    return {p, DType::kBF16};
  }
  // the GEMMs' bf16 copy of params (n) for adamw in bf16 storage, set from params and returned
  // under key; null in fp32 storage (no copy kept)
  uint16_t* weight_copy(const char* key, const float* params, size_t n) {
    if (storage_ == DType::kF32) return nullptr;
    uint16_t* bits = scratch<uint16_t>(n);
    be_.convert_to_bf16(bits, params, n);
    outputs_[key] = {bits, n, DType::kBF16};
    return bits;
  }
  // an output the op accumulates into: starts from tensors[key] or zeros
  float* acc(const char* key, size_t n) {
    if (has(key)) {
      auto arr = get_typed_array<float>(tensors_.Get(key), key, (int64_t)n);
      return track(key, static_cast<float*>(place(arr.Data(), n * sizeof(float))), n);
    }
    std::vector<float> init(n, 0.f);
    return track(key, static_cast<float*>(place(init.data(), n * sizeof(float))), n);
  }
  // an input the op overwrites in place (the aliasing the contract allows): placed from
  // tensors[in_key] and returned under out_key
  float* in_place(const char* in_key, const char* out_key, size_t n) {
    auto arr = get_typed_array<float>(tensors_.Get(in_key), in_key, (int64_t)n);
    return track(out_key, static_cast<float*>(place(arr.Data(), n * sizeof(float))), n);
  }
  void host_value(const char* key, double v) { host_values_[key] = v; }
  // an output computed on the host (returned as it is)
  void host_array(const char* key, std::vector<float> values) { host_arrays_[key] = std::move(values); }
  // uninitialized backend memory of n T's, released with the runner
  template <typename T> T* scratch(size_t n) {
    void* p = be_.allocate(n * sizeof(T));
    allocations_.push_back(p);
    return static_cast<T*>(p);
  }
  // backend memory holding a copy of `host` (a StepStatus, say), and reading one back
  template <typename T> T* device_copy(const T& host) { return static_cast<T*>(place(&host, sizeof(T))); }
  template <typename T> T read(const T* device) const {
    T host;
    be_.download(&host, device, sizeof(T));
    return host;
  }
  bool has_dim(const std::string& key) const { return dims_.Has(key); }
  // a switch in dims: 0 or 1 (absent: 0), refused with a sentence otherwise
  bool flag(const char* key) const {
    if (!dims_.Has(key)) return false;
    const Napi::Value v = dims_.Get(key);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (d != 0 && d != 1)
      throw Napi::RangeError::New(env_, std::string("testBackendOp: dims.") + key + " must be 0 or 1, got '" +
                                            v.ToString().Utf8Value() + "'");
    return d == 1;
  }
  Napi::Env env() const { return env_; }

  PartGeometry geometry() const {
    PartGeometry g;
    g.batch = dim("batch");
    g.parts = dim("parts");
    g.visible = dim("visible");
    g.patch = dim("patch");
    g.channels = dim("channels");
    g.image = dim("image");
    if (g.batch < 1 || g.parts < 1 || g.patch < 1 || g.channels < 1 || g.image % g.patch != 0)
      throw Napi::RangeError::New(env_, "testBackendOp: inconsistent part geometry");
    g.grid = g.image / g.patch;
    g.num_patches = g.grid * g.grid;
    if (g.visible < 1 || g.parts * g.visible > g.num_patches)
      throw Napi::RangeError::New(env_, "testBackendOp: inconsistent part geometry");
    return g;
  }

  Napi::Object results() {
    Napi::Object result = Napi::Object::New(env_);
    for (auto& [key, o] : outputs_) {
      auto arr = Napi::Float32Array::New(env_, o.n);
      download_f32(be_, arr.Data(), ActIn(o.data, o.dtype), o.n);
      result.Set(key, arr);
    }
    for (auto& [key, v] : host_values_) result.Set(key, Napi::Number::New(env_, v));
    for (auto& [key, values] : host_arrays_) {
      auto arr = Napi::Float32Array::New(env_, values.size());
      std::copy(values.begin(), values.end(), arr.Data());
      result.Set(key, arr);
    }
    return result;
  }

 private:
  void* place(const void* host, size_t bytes) {
    void* p = be_.allocate(bytes);
    allocations_.push_back(p);
    be_.upload(p, host, bytes);
    return p;
  }
  float* track(const char* key, float* p, size_t n) {
    outputs_[key] = {p, n, DType::kF32};
    return p;
  }
  struct Output {
    const void* data;
    size_t n;
    DType dtype;
  };

  Backend& be_;
  Napi::Env env_;
  Napi::Object tensors_, dims_;
  DType storage_;  // of the views
  std::vector<void*> allocations_;
  std::map<std::string, Output> outputs_;
  std::map<std::string, double> host_values_;
  std::map<std::string, std::vector<float>> host_arrays_;
};

// The GEMM backwards' dout (R·N): a view, or with dims.doutF32 = 1 fp32 in either storage, as the
// core passes the residual stream's gradient to the proj and fc2 backwards and the classifier its
// dlogits (the CUDA bf16 GEMMs then convert it on the fly, dbias from its fp32 values).
ActIn gemm_dout(Runner& r, size_t n) { return r.flag("doutF32") ? ActIn(r.in("dout", n)) : r.view_in("dout", n); }

void run(const std::string& name, Backend& be, Runner& r) {
  if (r.has_dim("doutF32") && name != "matmul_backward" && name != "matmul_backward_gelu")
    throw Napi::RangeError::New(r.env(), "testBackendOp: dims.doutF32 is for matmul_backward and "
                                         "matmul_backward_gelu, not '" + name + "'");
  if (r.has_dim("noDinp") && name != "matmul_backward")
    throw Napi::RangeError::New(r.env(), "testBackendOp: dims.noDinp is for matmul_backward, not '" + name + "'");
  if (name == "matmul_forward") {
    const int R = r.dim("R"), K = r.dim("K"), N = r.dim("N");
    const ActIn inp = r.view_in("inp", (size_t)R * K);
    const ActIn w = r.view_in("weight", (size_t)N * K);
    const float* bias = r.optional("bias", N);
    const float* residual = r.optional("residual", (size_t)R * N);
    // with a residual, out is the residual stream: fp32 in either storage, as the core passes it
    // (the CUDA GEMMs refuse a bf16 C with a residual)
    const Act out = residual ? Act(r.out("out", (size_t)R * N)) : r.view_out("out", (size_t)R * N);
    be.matmul_forward(out, inp, w, bias, residual, R, K, N);
  } else if (name == "matmul_backward") {
    const int R = r.dim("R"), K = r.dim("K"), N = r.dim("N");
    const ActIn dout = gemm_dout(r, (size_t)R * N);
    const ActIn inp = r.view_in("inp", (size_t)R * K);
    const ActIn w = r.view_in("weight", (size_t)N * K);
    const bool assign = r.has_dim("assign") && r.dim("assign") != 0;  // dweight = … (its input ignored)
    // dims.noDinp = 1: no input gradient (nullptr), as the patch embedding's backward passes it
    const Act dinp = r.flag("noDinp") ? Act(nullptr) : r.view_out("dinp", (size_t)R * K);
    be.matmul_backward(dinp, r.acc("dweight", (size_t)N * K), r.acc("dbias", N), dout, inp, w, R, K, N, assign);
  } else if (name == "matmul_gelu_forward") {
    const int R = r.dim("R"), K = r.dim("K"), N = r.dim("N");
    const ActIn inp = r.view_in("inp", (size_t)R * K);
    const ActIn w = r.view_in("weight", (size_t)N * K);
    const float* bias = r.optional("bias", N);
    be.matmul_gelu_forward(r.view_out("pre", (size_t)R * N), r.view_out("act", (size_t)R * N), inp, w, bias, R, K, N);
  } else if (name == "matmul_backward_gelu") {
    const int R = r.dim("R"), K = r.dim("K"), N = r.dim("N");
    const ActIn dout = gemm_dout(r, (size_t)R * N);
    const ActIn inp = r.view_in("inp", (size_t)R * K);
    const ActIn w = r.view_in("weight", (size_t)N * K);
    const ActIn gelu_inp = r.view_in("geluInp", (size_t)R * K);
    const bool assign = r.has_dim("assign") && r.dim("assign") != 0;
    be.matmul_backward_gelu(r.view_out("dinp", (size_t)R * K), r.acc("dweight", (size_t)N * K), r.acc("dbias", N), dout,
                            inp, w, gelu_inp, R, K, N, assign);
  } else if (name == "layernorm_forward") {
    const int R = r.dim("R"), C = r.dim("C");
    const float* inp = r.in("inp", (size_t)R * C);
    const float* w = r.in("weight", C);
    const float* b = r.in("bias", C);
    be.layernorm_forward(r.view_out("out", (size_t)R * C), r.out("mean", R), r.out("rstd", R), inp, w, b, R, C,
                         (float)r.scalar("eps"));
  } else if (name == "layernorm_backward") {
    const int R = r.dim("R"), C = r.dim("C");
    const ActIn dout = r.view_in("dout", (size_t)R * C);
    const float* inp = r.in("inp", (size_t)R * C);
    const float* w = r.in("weight", C);
    const float* mean = r.in("mean", R);
    const float* rstd = r.in("rstd", R);
    be.layernorm_backward(r.acc("dinp", (size_t)R * C), r.acc("dweight", C), r.acc("dbias", C), dout, inp, w, mean, rstd,
                          R, C);
  } else if (name == "gelu_forward" || name == "gelu_backward") {
    const int n = r.dim("n");
    const ActIn inp = r.view_in("inp", n);
    if (name == "gelu_forward") {
      be.gelu_forward(r.view_out("out", n), inp, n);
    } else {
      const ActIn dout = r.view_in("dout", n);
      be.gelu_backward(r.view_out("dinp", n), inp, dout, n);
    }
  } else if (name == "attention_forward" || name == "attention_backward") {
    const int S = r.dim("S"), T = r.dim("T"), H = r.dim("H"), dh = r.dim("dh");
    const size_t rows = (size_t)S * T, D = (size_t)H * dh;
    const ActIn qkv = r.view_in("qkv", rows * 3 * D);
    if (name == "attention_forward") {
      be.attention_forward(r.view_out("out", rows * D), r.out("lse", (size_t)S * H * T), qkv, S, T, H, dh);
    } else {
      const ActIn dout = r.view_in("dout", rows * D);
      const ActIn out = r.view_in("out", rows * D);
      const float* lse = r.in("lse", (size_t)S * H * T);
      be.attention_backward(r.view_out("dqkv", rows * 3 * D), dout, qkv, out, lse, S, T, H, dh);
    }
  } else if (name == "gather_visible_patches" || name == "patchify_target") {
    const PartGeometry g = r.geometry();
    const size_t P = (size_t)g.patch * g.patch * g.channels;
    const float* images = r.in("images", (size_t)g.batch * g.channels * g.image * g.image);
    if (name == "patchify_target") {
      be.patchify_target(r.out("target", (size_t)g.batch * g.num_patches * P), images, g, r.dim("normPix") != 0);
    } else {
      const int32_t* perm = r.perm((size_t)g.batch * g.num_patches);
      be.gather_visible_patches(r.view_out("cols", (size_t)g.batch * g.parts * g.visible * P), images, perm, g);
    }
  } else if (name == "encoder_tokens_forward" || name == "encoder_tokens_backward") {
    const PartGeometry g = r.geometry();
    const int D = r.dim("D");
    const size_t S = (size_t)g.batch * g.parts;
    const int32_t* perm = r.perm((size_t)g.batch * g.num_patches);
    if (name == "encoder_tokens_forward") {
      const ActIn emb = r.view_in("emb", S * g.visible * D);
      const float* cls = r.in("cls", D);
      const float* pos = r.in("pos", (size_t)(1 + g.num_patches) * D);
      be.encoder_tokens_forward(r.out("x", S * (1 + g.visible) * D), emb, cls, pos, perm, g, D);
    } else {
      const float* dx = r.in("dx", S * (1 + g.visible) * D);
      be.encoder_tokens_backward(r.view_out("demb", S * g.visible * D), r.acc("dcls", D), dx, perm, g, D);
    }
  } else if (name == "decoder_tokens_forward" || name == "decoder_tokens_backward") {
    const PartGeometry g = r.geometry();
    const int D = r.dim("D");
    const size_t S = (size_t)g.batch * g.parts;
    const int32_t* perm = r.perm((size_t)g.batch * g.num_patches);
    if (name == "decoder_tokens_forward") {
      const ActIn y = r.view_in("y", S * (1 + g.visible) * D);
      const float* mask = r.in("mask", D);
      const float* pos = r.in("pos", (size_t)(1 + g.num_patches) * D);
      be.decoder_tokens_forward(r.out("z", S * (1 + g.num_patches) * D), y, mask, pos, perm, g, D);
    } else {
      const float* dz = r.in("dz", S * (1 + g.num_patches) * D);
      be.decoder_tokens_backward(r.view_out("dy", S * (1 + g.visible) * D), r.acc("dmask", D), dz, perm, g, D);
    }
  } else if (name == "loss") {
    const PartGeometry g = r.geometry();
    const size_t P = (size_t)g.patch * g.patch * g.channels;
    const size_t S = (size_t)g.batch * g.parts;
    const int32_t* perm = r.perm((size_t)g.batch * g.num_patches);
    const ActIn pred = r.view_in("pred", S * (1 + g.num_patches) * P);
    const float* target = r.in("target", (size_t)g.batch * g.num_patches * P);
    LossValues* losses = r.device_copy(LossValues{});
    be.loss_forward_backward(losses, r.view_out("dpred", S * (1 + g.num_patches) * P), pred, target, perm, g,
                             (float)r.scalar("lambda"), r.dim("l1") != 0);
    const LossValues l = r.read(losses);
    r.host_value("loss", l.loss);
    r.host_value("recon", l.recon);
    r.host_value("consistency", l.consistency);
  } else if (name == "column_sum_accumulate") {
    const int R = r.dim("R"), C = r.dim("C");
    const float* src = r.in("src", (size_t)R * C);
    be.column_sum_accumulate(r.acc("dst", C), src, R, C);
  } else if (name == "pool_tokens_forward" || name == "pool_tokens_backward") {
    const int S = r.dim("S"), T = r.dim("T"), D = r.dim("D");
    const bool mean = r.dim("mean") != 0;
    // the backends' precondition, checked here so both refuse alike (the CPU would divide by 0)
    if (S < 1 || D < 1 || T < (mean ? 2 : 1))
      throw Napi::RangeError::New(r.env(), "testBackendOp: pool needs S >= 1, D >= 1 and T >= 2 (mean) or 1 (cls)");
    if (name == "pool_tokens_forward") {
      const float* x = r.in("x", (size_t)S * T * D);
      be.pool_tokens_forward(r.out("pooled", (size_t)S * D), x, S, T, D, mean);
    } else {
      const float* dpooled = r.in("dpooled", (size_t)S * D);
      be.pool_tokens_backward(r.out("dx", (size_t)S * T * D), dpooled, S, T, D, mean);
    }
  } else if (name == "residual_scaled_forward" || name == "scale_rows") {
    // dims.alias: 0 out separate; residual_scaled_forward 1 out = res, 2 out = branch (as in
    // core/blocks.cc); scale_rows 1 out = inp. The result is "out" in every case.
    const int S = r.dim("S"), n = r.dim("n");
    const int alias = r.has_dim("alias") ? r.dim("alias") : 0;
    const size_t count = (size_t)S * n;
    const float* keep = r.in("keep", S);
    if (name == "scale_rows") {
      if (alias > 1) throw Napi::RangeError::New(r.env(), "testBackendOp: scale_rows alias must be 0 or 1");
      float* out = alias == 1 ? r.in_place("inp", "out", count) : nullptr;
      const float* inp = out ? out : r.in("inp", count);
      be.scale_rows(out ? out : r.out("out", count), inp, keep, S, n);
    } else {
      if (alias > 2) throw Napi::RangeError::New(r.env(), "testBackendOp: residual_scaled_forward alias must be 0, 1 or 2");
      float* out = nullptr;
      const float* res = alias == 1 ? (out = r.in_place("res", "out", count)) : r.in("res", count);
      const float* branch = alias == 2 ? (out = r.in_place("branch", "out", count)) : r.in("branch", count);
      be.residual_scaled_forward(out ? out : r.out("out", count), res, branch, keep, S, n);
    }
  } else if (name == "cross_entropy") {
    const int B = r.dim("B"), C = r.dim("C");
    if (B < 1 || C < 1) throw Napi::RangeError::New(r.env(), "testBackendOp: cross_entropy needs B >= 1, C >= 1");
    const float* logits = r.in("logits", (size_t)B * C);
    const float* targets = r.in("targets", (size_t)B * C);
    double* loss = r.device_copy(0.0);
    be.cross_entropy_forward_backward(loss, r.out("dlogits", (size_t)B * C), logits, targets, B, C);
    r.host_value("loss", r.read(loss));
  } else if (name == "convert_to_bf16") {
    // x (n) → out (n): x rounded to bf16 (nearest even) and widened back on the host, so the
    // backends' rounding can be checked value for value
    const size_t n = (size_t)r.dim("n");
    const float* x = r.in("x", n);
    uint16_t* bits = r.scratch<uint16_t>(n);
    be.convert_to_bf16(bits, x, n);
    std::vector<float> widened(n);
    download_f32(be, widened.data(), ActIn(bits, DType::kBF16), n);
    r.host_array("out", std::move(widened));
  } else if (name == "adamw" || name == "grad_norm" || name == "optimizer_step") {
    // segments given as dims size0/decay0[/lrScale0], size1/decay1[/lrScale1], … laid out back to
    // back; lrScaleI (AdamW's lr multiplier of segment I) defaults to 1
    std::vector<ParamSegment> segments;
    size_t total = 0;
    for (int i = 0;; ++i) {
      const std::string size_key = "size" + std::to_string(i), decay_key = "decay" + std::to_string(i),
                        scale_key = "lrScale" + std::to_string(i);
      if (!r.has_dim(size_key)) break;
      const size_t n = (size_t)r.dim(size_key.c_str());
      const double lr_scale = r.has_dim(scale_key) ? r.scalar(scale_key.c_str()) : 1.0;
      segments.push_back({total, n, r.dim(decay_key.c_str()) != 0, lr_scale});
      total += n;
    }
    const int count = (int)segments.size();
    if (name == "grad_norm") {
      double* norm_sq = r.device_copy(0.0);
      be.grad_norm_squared(norm_sq, r.in("grad", total), segments.data(), count);
      r.host_value("normSquared", r.read(norm_sq));
    } else {
      AdamWScalars s;
      s.lr = (float)r.scalar("lr");
      s.beta1 = (float)r.scalar("beta1");
      s.beta2 = (float)r.scalar("beta2");
      s.eps = (float)r.scalar("eps");
      s.weight_decay = (float)r.scalar("weightDecay");
      const int step = r.dim("step");
      s.bias_correction1 = (float)(1.0 - std::pow((double)s.beta1, step));
      s.bias_correction2_sqrt = (float)std::sqrt(1.0 - std::pow((double)s.beta2, step));
      float* p = r.acc("param", total);
      float* m = r.acc("expAvg", total);
      float* v = r.acc("expAvgSq", total);
      if (name == "adamw") {
        // the plain update: a status that lets it run, no clipping (grad comes back unchanged)
        float* grad = r.in_place("grad", "grad", total);
        be.adamw(p, grad, m, v, r.weight_copy("paramBf16", p, total), segments.data(), count, s,
                 r.device_copy(StepStatus{}), 0.f, false);
      } else {
        // the optimizer as adamw_step runs it: the norm into the status, then the update decided
        // from it. tensors.loss (one value, NaN/Infinity allowed) is the status' loss, checked
        // when dims.checkLoss; dims.clipGrad (default 0) clips. grad comes back as the update
        // left it (clipped or not).
        StepStatus init;
        if (r.has("loss")) init.losses.loss = get_typed_array<float>(r.tensor("loss"), "loss", 1).Data()[0];
        StepStatus* status = r.device_copy(init);
        float* grad = r.in_place("grad", "grad", total);
        be.grad_norm_squared(&status->grad_norm_sq, grad, segments.data(), count);
        const float clip = r.has_dim("clipGrad") ? (float)r.scalar("clipGrad") : 0.f;
        const bool check_loss = r.has_dim("checkLoss") && r.dim("checkLoss") != 0;
        be.adamw(p, grad, m, v, r.weight_copy("paramBf16", p, total), segments.data(), count, s, status, clip,
                 check_loss);
        const StepStatus after = r.read(status);
        r.host_value("normSquared", after.grad_norm_sq);
        r.host_value("updated", decide_step(after, clip, check_loss).update);
      }
    }
  } else {
    throw Napi::RangeError::New(r.env(), "testBackendOp: unknown op '" + name + "'");
  }
}

}  // namespace

Napi::Value TestBackendOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "Expected a string for device");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "Expected a string for name");
  const std::string device = info[0].As<Napi::String>().Utf8Value();
  const std::string name = info[1].As<Napi::String>().Utf8Value();
  Napi::Object tensors = get_object(info[2], "tensors");
  Napi::Object dims = get_object(info[3], "dims");
  if (device != "cpu" && device != "cuda")
    throw Napi::RangeError::New(env, "Expected 'cpu' or 'cuda' for device but received '" + device + "'");
  DType storage = DType::kF32;
  if (dims.Has("bf16")) {
    const Napi::Value flag = dims.Get("bf16");
    const double v = flag.IsNumber() ? flag.As<Napi::Number>().DoubleValue() : -1;
    if (v != 0 && v != 1)
      throw Napi::RangeError::New(env, "testBackendOp: dims.bf16 must be 0 (fp32 activations) or 1 (activations "
                                       "stored in bf16), got '" + flag.ToString().Utf8Value() + "'");
    if (v == 1) storage = DType::kBF16;
  }
  return guard(env, "testBackendOp", [&] {
    std::unique_ptr<Backend> be;
    if (device == "cuda") be = cuda::make_cuda_backend(0, storage);
    else if (storage == DType::kBF16) be = cpu::make_bf16_reference_backend(cpu::make_cpu_backend());
    else be = cpu::make_cpu_backend();
    Napi::Object result = Napi::Object::New(env);
    {
      Runner runner(*be, env, tensors, dims, storage);
      run(name, *be, runner);
      result = runner.results();
    }
    return result;
  });
}

}  // namespace emae::napi
