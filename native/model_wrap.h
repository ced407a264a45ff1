// Model: the JS handle of one native EMAE model (Napi::ObjectWrap owning an emae::Model).
// Long calls (lossAndGrads, trainStep) run on the libuv pool as Napi::AsyncWorker and return
// promises; their inputs are copied into the worker first, so the caller may reuse its arrays.
#pragma once
#include <napi.h>

#include <memory>

#include "core/model.h"

namespace emae::napi {

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // createModel(config) → Promise<Model>: builds the model (allocation, MAE initialization, upload)
  // off the JS thread, then wraps it.
  static Napi::Value CreateAsync(const Napi::CallbackInfo& info);
  // JS `new Model(external)` from CreateAsync only; adopts the emae::Model the External holds.
  explicit ModelWrap(const Napi::CallbackInfo& info);

  Model& model() { return *model_; }
  void set_busy(bool busy) { busy_ = busy; }

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
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value BackendName(const Napi::CallbackInfo& info);

  // throws unless the model is alive and idle
  void check_usable(Napi::Env env, const char* op) const;

  std::unique_ptr<Model> model_;
  bool busy_ = false;
};

}  // namespace emae::napi
