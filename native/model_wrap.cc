#include "model_wrap.h"

#include <omp.h>

#include <functional>
#include <string>
#include <vector>

#include "compute_thread.h"
#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "distributed/dist.h"
#include "napi_util.h"
#include "wrap_common.h"

namespace emae::napi {
namespace {

ModelConfig parse_config(const Napi::Object& o, std::string& device) {
  device = get_string(o, "device");
  if (device != "cpu" && device != "cuda")
    throw Napi::RangeError::New(o.Env(), "Expected 'cpu' or 'cuda' for device but received '" + device + "'");
  ModelConfig c;
  c.image_size = get_int(o, "imageSize", 1);
  c.patch_size = get_int(o, "patchSize", 1);
  c.channels = get_int(o, "channels", 1);
  c.embed_dim = get_int(o, "embedDim", 1);
  c.depth = get_int(o, "depth", 1);
  c.num_heads = get_int(o, "numHeads", 1);
  c.decoder_embed_dim = get_int(o, "decoderEmbedDim", 1);
  c.decoder_depth = get_int(o, "decoderDepth", 1);
  c.decoder_num_heads = get_int(o, "decoderNumHeads", 1);
  const double mlp_ratio = get_number(o, "mlpRatio");
  const double hidden = mlp_ratio * c.embed_dim, dec_hidden = mlp_ratio * c.decoder_embed_dim;
  if (mlp_ratio <= 0 || hidden != std::floor(hidden) || dec_hidden != std::floor(dec_hidden))
    throw Napi::RangeError::New(o.Env(), "mlpRatio must be positive and give whole MLP widths");
  c.mlp_hidden = (int)hidden;
  c.decoder_mlp_hidden = (int)dec_hidden;
  c.parts = get_int(o, "parts", 1);
  c.parts_total = get_int(o, "partsTotal", 1);
  c.norm_pix_loss = get_bool(o, "normPixLoss");
  const std::string dist = get_string(o, "consistencyDistance");
  if (dist != "mse" && dist != "l1")
    throw Napi::RangeError::New(o.Env(), "Expected 'mse' or 'l1' for consistencyDistance but received '" + dist + "'");
  c.consistency_l1 = dist == "l1";
  c.layer_norm_eps = (float)get_number(o, "layerNormEps");
  const std::string cpu_matmul = get_string(o, "cpuMatmul");
  if (cpu_matmul != "fp32" && cpu_matmul != "bf16")
    throw Napi::RangeError::New(o.Env(), "Expected 'fp32' or 'bf16' for cpuMatmul but received '" + cpu_matmul + "'");
  c.cpu_bf16_matmul = cpu_matmul == "bf16";
  const double seed = get_number(o, "seed");
  if (seed < 0 || seed > 4294967295.0 || seed != std::floor(seed))
    throw Napi::RangeError::New(o.Env(), "Expected an unsigned 32-bit integer for seed");
  c.seed = (uint32_t)seed;
  c.threads = get_int(o, "threads", 1);
  return c;
}

// A batch copied out of JS memory.
struct Batch {
  std::vector<float> images;
  std::vector<int32_t> perm;
  int batch = 0;
  float lambda = 1.f;
};

Batch parse_batch(const Napi::Value& v, const ModelConfig& c) {
  Napi::Object o = get_object(v, "batch");
  Batch b;
  b.batch = get_int(o, "batchSize", 1);
  const int64_t N = c.num_patches();
  auto images = get_typed_array<float>(o.Get("images"), "images",
                                       (int64_t)b.batch * c.channels * c.image_size * c.image_size);
  auto perm = get_typed_array<int32_t>(o.Get("permutation"), "permutation", (int64_t)b.batch * N);
  b.images.assign(images.Data(), images.Data() + images.ElementLength());
  b.perm.assign(perm.Data(), perm.Data() + perm.ElementLength());
  // cheap re-check: each row is a permutation of 0..N-1 (a bad index would read out of bounds)
  std::vector<uint8_t> seen(N);
  for (int r = 0; r < b.batch; ++r) {
    std::fill(seen.begin(), seen.end(), 0);
    for (int64_t i = 0; i < N; ++i) {
      const int32_t p = b.perm[r * N + i];
      if (p < 0 || p >= N || seen[p])
        throw Napi::RangeError::New(v.Env(), "permutation row " + std::to_string(r) + " is not a permutation of 0.." +
                                                 std::to_string(N - 1));
      seen[p] = 1;
    }
  }
  const double lambda = get_number(o, "consistencyWeight");
  if (lambda < 0) throw Napi::RangeError::New(v.Env(), "Expected consistencyWeight >= 0");
  b.lambda = (float)lambda;
  return b;
}

Napi::Object losses_object(Napi::Env env, const LossValues& l) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loss", l.loss);
  o.Set("recon", l.recon);
  o.Set("consistency", l.consistency);
  return o;
}

// ---- async workers -------------------------------------------------------------------------

}  // namespace

OptimOptions parse_optim(const Napi::Object& o) {
  OptimOptions opt;
  opt.lr = (float)get_number(o, "lr");
  opt.weight_decay = (float)get_number(o, "weightDecay");
  opt.beta1 = (float)get_number(o, "beta1");
  opt.beta2 = (float)get_number(o, "beta2");
  opt.eps = (float)get_number(o, "eps");
  opt.clip_grad = (float)get_number(o, "clipGrad");
  if (opt.lr < 0 || opt.weight_decay < 0 || opt.eps <= 0 || opt.clip_grad < 0 || opt.beta1 < 0 || opt.beta1 >= 1 ||
      opt.beta2 < 0 || opt.beta2 >= 1)
    throw Napi::RangeError::New(o.Env(), "optimizer options out of range (lr, weightDecay, clipGrad >= 0; eps > 0; betas in [0, 1))");
  return opt;
}

JobFailure run_job(const std::function<void()>& job) {
  try {
    run_on_compute_thread(job);
    return {};
  } catch (const NonFiniteLoss& e) {
    return {true, ErrorKind::Error, e.what(), "EMAE_NONFINITE_LOSS"};
  } catch (const std::bad_alloc&) {
    return {true, ErrorKind::Error, "out of memory", "EMAE_OUT_OF_MEMORY"};
  } catch (const OutOfMemory& e) {
    return {true, ErrorKind::Error, e.what(), "EMAE_OUT_OF_MEMORY"};
  } catch (const std::exception& e) {
    return {true, classify(e), e.what(), nullptr};
  }
}

namespace {

// What a StepWorker runs: forward+backward returning gradients, a full training step, a
// micro-batch of gradient accumulation (losses only), or the optimizer on accumulated gradients.
enum class StepMode { LossAndGrads, Train, Accumulate, Apply, Predict, Encode };

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, Napi::Object self_ref, ModelWrap* wrap, Batch batch, StepMode mode, OptimOptions opt,
             const char* op, bool reset = true, float grad_scale = 1.f)
      : Napi::AsyncWorker(env, op),
        deferred_(Napi::Promise::Deferred::New(env)),
        wrap_(wrap),
        batch_(std::move(batch)),
        mode_(mode),
        opt_(opt),
        op_(op),
        reset_(reset),
        grad_scale_(grad_scale) {
    self_ = Napi::Persistent(self_ref);  // keep the JS handle (and the model) alive meanwhile
    wrap_->set_busy(true);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override { failure_ = run_job([this] { run(); }); }

  // (on the compute thread)
  void run() {
    Model& m = wrap_->model();
    omp_set_num_threads(m.config().threads);
    ProfiledStep window(m.backend());  // EMAE_PROFILE=1: this call is one step of the report
    switch (mode_) {
      case StepMode::Train:
        result_ = m.train_step(batch_.images.data(), batch_.perm.data(), batch_.batch, batch_.lambda, opt_);
        break;
      case StepMode::LossAndGrads:
        result_.losses = m.loss_and_grads(batch_.images.data(), batch_.perm.data(), batch_.batch, batch_.lambda);
        grads_.resize(m.layout().total);
        m.get_grads(grads_.data());
        break;
      case StepMode::Accumulate:
        result_.losses =
            m.loss_and_grads(batch_.images.data(), batch_.perm.data(), batch_.batch, batch_.lambda, !reset_);
        break;
      case StepMode::Apply:
        result_ = m.apply_gradients(opt_, grad_scale_);
        break;
      case StepMode::Predict: {
        const ModelConfig& c = m.config();
        output_.resize((size_t)batch_.batch * c.parts * (1 + c.num_patches()) * c.patch_dim());
        result_.losses = m.predict(batch_.images.data(), batch_.perm.data(), batch_.batch, batch_.lambda, output_.data());
        break;
      }
      case StepMode::Encode: {
        const ModelConfig& c = m.config();
        output_.resize((size_t)batch_.batch * (1 + c.num_patches()) * c.embed_dim);
        m.encode(batch_.images.data(), batch_.batch, output_.data());
        break;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    wrap_->set_busy(false);
    if (failure_.failed) {
      deferred_.Reject(make_error(env, failure_.kind, std::string(op_) + ": " + failure_.message, failure_.code).Value());
      return;
    }
    if (mode_ == StepMode::Encode) {
      auto features = Napi::Float32Array::New(env, output_.size());
      std::copy(output_.begin(), output_.end(), features.Data());
      deferred_.Resolve(features);
      return;
    }
    Napi::Object out = mode_ == StepMode::Apply ? Napi::Object::New(env) : losses_object(env, result_.losses);
    if (mode_ == StepMode::Predict) {
      auto pred = Napi::Float32Array::New(env, output_.size());
      std::copy(output_.begin(), output_.end(), pred.Data());
      out.Set("pred", pred);
    }
    if (mode_ == StepMode::Train || mode_ == StepMode::Apply) {
      out.Set("gradNorm", result_.grad_norm);
      out.Set("step", (double)result_.step);
    } else if (mode_ == StepMode::LossAndGrads) {
      out.Set("grads", tensors_object(env, wrap_->model().layout(), grads_, has_optimizer_state));
    }
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override {
    wrap_->set_busy(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference self_;
  ModelWrap* wrap_;
  Batch batch_;
  StepMode mode_;
  OptimOptions opt_;
  const char* op_;
  bool reset_;
  float grad_scale_;
  StepResult result_;
  std::vector<float> grads_;
  std::vector<float> output_;  // predictions or features
  JobFailure failure_;
};


}  // namespace

Napi::Value ModelWrap::CreateAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string device;
  ModelConfig config = parse_config(get_object(info[0], "config"), device);
  guard(env, "createModel", [&] { config.validate(); });  // cheap checks before queuing
  auto* worker = new CreateWorker<Model, ModelConfig>(env, "createModel", config, device, &AddonData::model);
  return queue(worker);
}

Napi::Function ModelWrap::Define(Napi::Env env) {
  return DefineClass(env, "Model",
                     {
                         InstanceMethod<&ModelWrap::ParamInfo>("paramInfo"),
                         InstanceMethod<&ModelWrap::GetParams>("getParams"),
                         InstanceMethod<&ModelWrap::SetParams>("setParams"),
                         InstanceMethod<&ModelWrap::GetOptimizerState>("getOptimizerState"),
                         InstanceMethod<&ModelWrap::SetOptimizerState>("setOptimizerState"),
                         InstanceMethod<&ModelWrap::LossAndGrads>("lossAndGrads"),
                         InstanceMethod<&ModelWrap::TrainStep>("trainStep"),
                         InstanceMethod<&ModelWrap::AccumulateGrads>("accumulateGrads"),
                         InstanceMethod<&ModelWrap::Predict>("predict"),
                         InstanceMethod<&ModelWrap::Encode>("encode"),
                         InstanceMethod<&ModelWrap::ApplyGrads>("applyGrads"),
                         InstanceMethod<&ModelWrap::Profile>("profile"),
                         InstanceMethod<&ModelWrap::Memory>("memory"),
                         InstanceMethod<&ModelWrap::Dispose>("dispose"),
                         InstanceAccessor<&ModelWrap::Disposed>("disposed"),
                         InstanceAccessor<&ModelWrap::BackendName>("backend"),
                         InstanceAccessor<&ModelWrap::Activations>("activations"),
                     });
}

ModelWrap::ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "Model is created with createModel(config), not with new");
  model_.reset(info[0].As<Napi::External<Model>>().Data());
}

void ModelWrap::check_usable(Napi::Env env, const char* op) const {
  if (!model_) throw Napi::Error::New(env, std::string(op) + ": the model has been disposed");
  if (busy_) throw Napi::Error::New(env, std::string(op) + ": another call is still running on this model");
}

Napi::Value ModelWrap::ParamInfo(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "paramInfo");
  return param_info_array(info.Env(), *model_);
}

Napi::Value ModelWrap::GetParams(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "getParams");
  return params_object(info.Env(), *model_);
}

Napi::Value ModelWrap::SetParams(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "setParams");
  set_params_from(info[0], *model_);
  return info.Env().Undefined();
}

Napi::Value ModelWrap::GetOptimizerState(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "getOptimizerState");
  return optimizer_state_object(info.Env(), *model_);
}

Napi::Value ModelWrap::SetOptimizerState(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "setOptimizerState");
  set_optimizer_state_from(info.Env(), info[0], *model_);
  return info.Env().Undefined();
}

Napi::Value ModelWrap::LossAndGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "lossAndGrads");
  Batch batch = parse_batch(info[0], model_->config());
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, std::move(batch), StepMode::LossAndGrads, {},
                                "lossAndGrads");
  return queue(worker);
}

Napi::Value ModelWrap::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "trainStep");
  Batch batch = parse_batch(info[0], model_->config());
  OptimOptions opt = parse_optim(get_object(info[1], "optimizer options"));
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, std::move(batch), StepMode::Train, opt,
                                "trainStep");
  return queue(worker);
}

Napi::Value ModelWrap::Predict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "predict");
  Batch batch = parse_batch(info[0], model_->config());
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, std::move(batch), StepMode::Predict, {}, "predict");
  return queue(worker);
}

Napi::Value ModelWrap::Encode(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "encode");
  Napi::Object o = get_object(info[0], "encode input");
  const ModelConfig& c = model_->config();
  Batch batch;
  batch.batch = get_int(o, "batchSize", 1);
  auto images = get_typed_array<float>(o.Get("images"), "images",
                                       (int64_t)batch.batch * c.channels * c.image_size * c.image_size);
  batch.images.assign(images.Data(), images.Data() + images.ElementLength());
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, std::move(batch), StepMode::Encode, {}, "encode");
  return queue(worker);
}

Napi::Value ModelWrap::AccumulateGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "accumulateGrads");
  Batch batch = parse_batch(info[0], model_->config());
  const bool reset = get_bool(get_object(info[1], "accumulate options"), "reset");
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, std::move(batch), StepMode::Accumulate, {},
                                "accumulateGrads", reset);
  return queue(worker);
}

Napi::Value ModelWrap::ApplyGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "applyGrads");
  Napi::Object o = get_object(info[0], "optimizer options");
  OptimOptions opt = parse_optim(o);
  const double scale = get_number(o, "gradScale");
  if (!(scale > 0)) throw Napi::RangeError::New(env, "Expected gradScale > 0");
  auto* worker = new StepWorker(env, info.This().As<Napi::Object>(), this, Batch{}, StepMode::Apply, opt, "applyGrads",
                                true, (float)scale);
  return queue(worker);
}

Napi::Value ModelWrap::Memory(const Napi::CallbackInfo& info) {
  if (!model_) throw Napi::Error::New(info.Env(), "memory: the model has been disposed");
  return memory_of(info, *model_);
}

// (config, batchSize, activations) → the memory plan of a model not created (nothing allocated)
Napi::Value ModelWrap::MemoryPlanFor(const Napi::CallbackInfo& info) {
  std::string device;
  return memory_plan_for<Model>(info, parse_config(get_object(info[0], "config"), device));
}

Napi::Value ModelWrap::Profile(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "profile");
  return profile_object(info, model_->backend());
}

Napi::Value ModelWrap::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (busy_) throw Napi::Error::New(env, "dispose: a call is still running on this model; await it first");
  model_.reset();
  return env.Undefined();
}

Napi::Value ModelWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value ModelWrap::BackendName(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "backend");
  return Napi::String::New(info.Env(), model_->backend().name());
}

Napi::Value ModelWrap::Activations(const Napi::CallbackInfo& info) {
  if (!model_) throw Napi::Error::New(info.Env(), "activations: the model has been disposed");
  return Napi::String::New(info.Env(), dtype_name(model_->backend().activation_dtype()));
}

}  // namespace emae::napi
