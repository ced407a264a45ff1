#include "classifier_wrap.h"

#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "model_wrap.h"
#include "napi_util.h"
#include "wrap_common.h"

namespace emae::napi {
namespace {

ClassifierConfig parse_config(const Napi::Object& o, std::string& device) {
  device = get_string(o, "device");
  if (device != "cpu" && device != "cuda")
    throw Napi::RangeError::New(o.Env(), "Expected 'cpu' or 'cuda' for device but received '" + device + "'");
  ClassifierConfig c;
  c.image_size = get_int(o, "imageSize", 1);
  c.patch_size = get_int(o, "patchSize", 1);
  c.channels = get_int(o, "channels", 1);
  c.embed_dim = get_int(o, "embedDim", 1);
  c.depth = get_int(o, "depth", 1);
  c.num_heads = get_int(o, "numHeads", 1);
  const double hidden = get_number(o, "mlpRatio") * c.embed_dim;
  if (!(hidden > 0) || hidden != std::floor(hidden))
    throw Napi::RangeError::New(o.Env(), "mlpRatio must be positive and give a whole MLP width");
  c.mlp_hidden = (int)hidden;
  c.num_classes = get_int(o, "numClasses", 2);
  c.global_pool = get_bool(o, "globalPool");
  c.drop_path = (float)get_number(o, "dropPath");
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

// A batch copied out of JS memory: images, soft targets, optional drop-path factors.
struct ClassifierBatch {
  std::vector<float> images, targets, keep;
  int batch = 0;
};

ClassifierBatch parse_batch(const Napi::Value& v, const ClassifierConfig& c, bool with_targets) {
  Napi::Object o = get_object(v, "batch");
  ClassifierBatch b;
  b.batch = get_int(o, "batchSize", 1);
  auto images = get_typed_array<float>(o.Get("images"), "images",
                                       (int64_t)b.batch * c.channels * c.image_size * c.image_size);
  b.images.assign(images.Data(), images.Data() + images.ElementLength());
  if (!with_targets) return b;
  auto targets = get_typed_array<float>(o.Get("targets"), "targets", (int64_t)b.batch * c.num_classes);
  b.targets.assign(targets.Data(), targets.Data() + targets.ElementLength());
  for (float t : b.targets)  // cheap re-check of what TypeScript validated
    if (!(t >= 0 && t <= 1)) throw Napi::RangeError::New(v.Env(), "targets must be in [0, 1]");
  if (o.Has("keep") && !o.Get("keep").IsUndefined() && !o.Get("keep").IsNull()) {
    auto keep = get_typed_array<float>(o.Get("keep"), "keep", (int64_t)c.depth * 2 * b.batch);
    b.keep.assign(keep.Data(), keep.Data() + keep.ElementLength());
    for (float k : b.keep)
      if (!(k >= 0 && std::isfinite(k))) throw Napi::RangeError::New(v.Env(), "keep factors must be finite and >= 0");
  }
  return b;
}

enum class Mode { LossAndGrads, Train, Predict };

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, Napi::Object self_ref, ClassifierWrap* wrap, ClassifierBatch batch, Mode mode,
         FinetuneOptim opt, const char* op)
      : Napi::AsyncWorker(env, op),
        deferred_(Napi::Promise::Deferred::New(env)),
        wrap_(wrap),
        batch_(std::move(batch)),
        mode_(mode),
        opt_(opt),
        op_(op) {
    self_ = Napi::Persistent(self_ref);
    wrap_->set_busy(true);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override { failure_ = run_job([this] { run(); }); }

  void run() {
    Classifier& m = wrap_->model();
    omp_set_num_threads(m.config().threads);
    ProfiledStep window(m.backend());  // EMAE_PROFILE=1: this call is one step of the report
    const float* keep = batch_.keep.empty() ? nullptr : batch_.keep.data();
    switch (mode_) {
      case Mode::Train:
        result_ = m.train_step(batch_.images.data(), batch_.targets.data(), keep, batch_.batch, opt_);
        break;
      case Mode::LossAndGrads:
        result_.losses.loss = m.loss_and_grads(batch_.images.data(), batch_.targets.data(), keep, batch_.batch);
        grads_.resize(m.layout().total);
        m.get_grads(grads_.data());
        break;
      case Mode::Predict:
        output_.resize((size_t)batch_.batch * m.config().num_classes);
        m.predict(batch_.images.data(), batch_.batch, output_.data());
        break;
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    wrap_->set_busy(false);
    if (failure_.failed) {
      deferred_.Reject(make_error(env, failure_.kind, std::string(op_) + ": " + failure_.message, failure_.code).Value());
      return;
    }
    if (mode_ == Mode::Predict) {
      auto logits = Napi::Float32Array::New(env, output_.size());
      std::copy(output_.begin(), output_.end(), logits.Data());
      deferred_.Resolve(logits);
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("loss", result_.losses.loss);
    if (mode_ == Mode::Train) {
      out.Set("gradNorm", result_.grad_norm);
      out.Set("step", (double)result_.step);
    } else {
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
  ClassifierWrap* wrap_;
  ClassifierBatch batch_;
  Mode mode_;
  FinetuneOptim opt_;
  const char* op_;
  StepResult result_;
  std::vector<float> grads_, output_;
  JobFailure failure_;
};


}  // namespace

Napi::Value ClassifierWrap::CreateAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string device;
  ClassifierConfig config = parse_config(get_object(info[0], "config"), device);
  guard(env, "createClassifier", [&] { config.validate(); });
  return queue(new CreateWorker<Classifier, ClassifierConfig>(env, "createClassifier", config, device, &AddonData::classifier));
}

Napi::Function ClassifierWrap::Define(Napi::Env env) {
  return DefineClass(env, "Classifier",
                     {
                         InstanceMethod<&ClassifierWrap::ParamInfo>("paramInfo"),
                         InstanceMethod<&ClassifierWrap::GetParams>("getParams"),
                         InstanceMethod<&ClassifierWrap::SetParams>("setParams"),
                         InstanceMethod<&ClassifierWrap::GetOptimizerState>("getOptimizerState"),
                         InstanceMethod<&ClassifierWrap::SetOptimizerState>("setOptimizerState"),
                         InstanceMethod<&ClassifierWrap::LossAndGrads>("lossAndGrads"),
                         InstanceMethod<&ClassifierWrap::TrainStep>("trainStep"),
                         InstanceMethod<&ClassifierWrap::Predict>("predict"),
                         InstanceMethod<&ClassifierWrap::Profile>("profile"),
                         InstanceMethod<&ClassifierWrap::Memory>("memory"),
                         InstanceMethod<&ClassifierWrap::Dispose>("dispose"),
                         InstanceAccessor<&ClassifierWrap::Disposed>("disposed"),
                         InstanceAccessor<&ClassifierWrap::BackendName>("backend"),
                         InstanceAccessor<&ClassifierWrap::Activations>("activations"),
                     });
}

ClassifierWrap::ClassifierWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ClassifierWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "Classifier is created with createClassifier(config), not with new");
  model_.reset(info[0].As<Napi::External<Classifier>>().Data());
}

void ClassifierWrap::check_usable(Napi::Env env, const char* op) const {
  if (!model_) throw Napi::Error::New(env, std::string(op) + ": the classifier has been disposed");
  if (busy_) throw Napi::Error::New(env, std::string(op) + ": another call is still running on this classifier");
}

Napi::Value ClassifierWrap::ParamInfo(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "paramInfo");
  return param_info_array(info.Env(), *model_);
}

Napi::Value ClassifierWrap::GetParams(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "getParams");
  return params_object(info.Env(), *model_);
}

Napi::Value ClassifierWrap::SetParams(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "setParams");
  set_params_from(info[0], *model_);
  return info.Env().Undefined();
}

Napi::Value ClassifierWrap::GetOptimizerState(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "getOptimizerState");
  return optimizer_state_object(info.Env(), *model_);
}

Napi::Value ClassifierWrap::SetOptimizerState(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "setOptimizerState");
  set_optimizer_state_from(info.Env(), info[0], *model_);
  return info.Env().Undefined();
}

Napi::Value ClassifierWrap::LossAndGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "lossAndGrads");
  ClassifierBatch batch = parse_batch(info[0], model_->config(), true);
  return queue(new Worker(env, info.This().As<Napi::Object>(), this, std::move(batch), Mode::LossAndGrads, {},
                          "lossAndGrads"));
}

Napi::Value ClassifierWrap::TrainStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "trainStep");
  ClassifierBatch batch = parse_batch(info[0], model_->config(), true);
  Napi::Object o = get_object(info[1], "optimizer options");
  FinetuneOptim opt;
  opt.adamw = parse_optim(o);
  opt.layer_decay = (float)get_number(o, "layerDecay");
  if (!(opt.layer_decay > 0 && opt.layer_decay <= 1)) throw Napi::RangeError::New(env, "Expected layerDecay in (0, 1]");
  return queue(new Worker(env, info.This().As<Napi::Object>(), this, std::move(batch), Mode::Train, opt, "trainStep"));
}

Napi::Value ClassifierWrap::Predict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  check_usable(env, "predict");
  ClassifierBatch batch = parse_batch(info[0], model_->config(), false);
  return queue(new Worker(env, info.This().As<Napi::Object>(), this, std::move(batch), Mode::Predict, {}, "predict"));
}

Napi::Value ClassifierWrap::Memory(const Napi::CallbackInfo& info) {
  if (!model_) throw Napi::Error::New(info.Env(), "memory: the classifier has been disposed");
  return memory_of(info, *model_);
}

// (config, batchSize, activations) → the memory plan of a classifier not created (nothing allocated)
Napi::Value ClassifierWrap::MemoryPlanFor(const Napi::CallbackInfo& info) {
  std::string device;
  return memory_plan_for<Classifier>(info, parse_config(get_object(info[0], "config"), device));
}

Napi::Value ClassifierWrap::Profile(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "profile");
  return profile_object(info, model_->backend());
}

Napi::Value ClassifierWrap::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (busy_) throw Napi::Error::New(env, "dispose: a call is still running on this classifier; await it first");
  model_.reset();
  return env.Undefined();
}

Napi::Value ClassifierWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !model_); }

Napi::Value ClassifierWrap::BackendName(const Napi::CallbackInfo& info) {
  check_usable(info.Env(), "backend");
  return Napi::String::New(info.Env(), model_->backend().name());
}

Napi::Value ClassifierWrap::Activations(const Napi::CallbackInfo& info) {
  if (!model_) throw Napi::Error::New(info.Env(), "activations: the classifier has been disposed");
  return Napi::String::New(info.Env(), dtype_name(model_->backend().activation_dtype()));
}

}  // namespace emae::napi
