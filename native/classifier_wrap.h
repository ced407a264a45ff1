// Classifier: the JS handle of one native fine-tuning model (core/classifier.h). As ModelWrap:
// long calls run on the compute thread through Napi::AsyncWorker and return promises; inputs are
// copied first; a C++ exception becomes a rejected promise, never a crash.
#pragma once
#include <napi.h>

#include <memory>

#include "core/classifier.h"

namespace emae::napi {

class ClassifierWrap : public Napi::ObjectWrap<ClassifierWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // createClassifier(config) → Promise<Classifier>
  static Napi::Value CreateAsync(const Napi::CallbackInfo& info);
  // memoryPlan(config, batchSize, 'fp32' | 'bf16') → as memory(), planned without a model
  static Napi::Value MemoryPlanFor(const Napi::CallbackInfo& info);
  explicit ClassifierWrap(const Napi::CallbackInfo& info);

  Classifier& model() { return *model_; }
  void set_busy(bool busy) { busy_ = busy; }
  void check_usable(Napi::Env env, const char* op) const;

 private:
  Napi::Value ParamInfo(const Napi::CallbackInfo& info);
  Napi::Value GetParams(const Napi::CallbackInfo& info);
  Napi::Value SetParams(const Napi::CallbackInfo& info);
  Napi::Value GetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info);
  Napi::Value LossAndGrads(const Napi::CallbackInfo& info);
  Napi::Value TrainStep(const Napi::CallbackInfo& info);
  Napi::Value Predict(const Napi::CallbackInfo& info);
  Napi::Value Profile(const Napi::CallbackInfo& info);  // as ModelWrap::Profile
  // memory(batchSize) → { params, grads, optimizer, weightCopy, activations, total } bytes
  Napi::Value Memory(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value BackendName(const Napi::CallbackInfo& info);
  // 'fp32' | 'bf16': the element type its backend stores activations in (EMAE_ACTIVATIONS)
  Napi::Value Activations(const Napi::CallbackInfo& info);

  std::unique_ptr<Classifier> model_;
  bool busy_ = false;
};

}  // namespace emae::napi
