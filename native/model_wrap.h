// Model: the JS handle of one native EMAE model (Napi::ObjectWrap owning an emae::Model).
// Long calls (lossAndGrads, trainStep) run on the libuv pool as Napi::AsyncWorker and return
// promises; their inputs are copied into the worker first, so the caller may reuse its arrays.
#pragma once
#include <napi.h>

#include <functional>
#include <memory>
#include <string>

#include "core/model.h"
#include "napi_util.h"

namespace emae::napi {

// Per-environment data of the addon: the constructors createModel / createClassifier resolve with.
struct AddonData {
  Napi::FunctionReference model, classifier;
};

// What a worker's native job failed with; OnOK rejects the promise with it.
struct JobFailure {
  bool failed = false;
  ErrorKind kind = ErrorKind::Error;
  std::string message;
  const char* code = nullptr;
};

// Runs a worker's job on the compute thread (compute_thread.h); a C++ exception becomes a
// JobFailure with the error code JS sees, and never reaches Node. (model_wrap.cc)
JobFailure run_job(const std::function<void()>& job);

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // createModel(config) → Promise<Model>: builds the model (allocation, MAE initialization, upload)
  // off the JS thread, then wraps it.
  static Napi::Value CreateAsync(const Napi::CallbackInfo& info);
  // memoryPlan(config, batchSize, 'fp32' | 'bf16') → as memory(), planned without a model
  static Napi::Value MemoryPlanFor(const Napi::CallbackInfo& info);
  // JS `new Model(external)` from CreateAsync only; adopts the emae::Model the External holds.
  explicit ModelWrap(const Napi::CallbackInfo& info);

  Model& model() { return *model_; }
  void set_busy(bool busy) { busy_ = busy; }
  // throws unless the model is alive and idle
  void check_usable(Napi::Env env, const char* op) const;

 private:
  Napi::Value ParamInfo(const Napi::CallbackInfo& info);
  Napi::Value GetParams(const Napi::CallbackInfo& info);
  Napi::Value SetParams(const Napi::CallbackInfo& info);
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value LossAndGrads(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value AccumulateGrads(const Napi::CallbackInfo& info);
  Napi::Value Predict(const Napi::CallbackInfo& info);
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value ApplyGrads(const Napi::CallbackInfo& info);
  // profile({ reset }): the EMAE_PROFILE report (wrap_common.h), null when the model is not profiled
  Napi::Value Profile(const Napi::CallbackInfo& info);
  // memory(batchSize) → { params, grads, optimizer, weightCopy, activations, total } bytes
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value BackendName(const Napi::CallbackInfo& info);
  // 'fp32' | 'bf16': the element type its backend stores activations in (EMAE_ACTIVATIONS)
  Napi::Value Activations(const Napi::CallbackInfo& info);

  std::unique_ptr<Model> model_;
  bool busy_ = false;
};

}  // namespace emae::napi
