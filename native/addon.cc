// The Node-API surface of emae (glue only): the Model class, CUDA device information, the
// default thread count and the internal op-test entry point.
#include <napi.h>
#include <omp.h>

#include "cpu/gemm.h"
#include "cuda/device_info.h"
#include "classifier_wrap.h"
#include "model_wrap.h"
#include "wrap_common.h"  // activations_requested

namespace emae::napi {

Napi::Value TestOp(const Napi::CallbackInfo& info);         // test_ops.cc
Napi::Value TestBackendOp(const Napi::CallbackInfo& info);  // backend_ops.cc
void InitDistributed(Napi::Env env, Napi::Object exports);  // dist/dist_wrap.cc

namespace {

Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // the GEMM path a model created now would take: it depends on EMAE_ACTIVATIONS, reported as
  // "refused: …" (never thrown) when its value is not one of the allowed, as the other switches
  DType activations = DType::kF32;
  std::string activations_setting;
  try {
    activations = activations_requested(env);
    activations_setting = dtype_name(activations);
  } catch (const Napi::Error& e) {
    activations_setting = std::string("refused: ") + e.Message();
  }
  const cuda::DeviceReport report = cuda::query_devices(activations);
  Napi::Object out = Napi::Object::New(env);
  out.Set("compiled", report.compiled);
  out.Set("architectures", report.architectures);
  if (!report.error.empty()) out.Set("error", report.error);
  Napi::Array devices = Napi::Array::New(env, report.devices.size());
  for (size_t i = 0; i < report.devices.size(); ++i) {
    const auto& d = report.devices[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("multiProcessors", d.multi_processors);
    o.Set("totalMemory", (double)d.total_memory);
    o.Set("freeMemory", (double)d.free_memory);
    o.Set("gemmPath", d.gemm_path);
    o.Set("attentionPath", d.attention_path);
    o.Set("stepSync", d.step_sync);
    o.Set("activations", activations_setting);
    devices.Set((uint32_t)i, o);
  }
  out.Set("devices", devices);
  return out;
}

Napi::Value DefaultThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

// The CPU GEMM micro-kernel in use: "avx512", "avx2" or "generic" (EMAE_GEMM_KERNEL narrows it).
Napi::Value CpuGemmKernel(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu::gemm_kernel_name());
}

// Whether cpuMatmul 'bf16' can run, on which kernel ("amx-bf16", "avx512-bf16", "" when none), why not.
Napi::Value CpuBf16Available(const Napi::CallbackInfo& info) {
  std::string why;
  const char* kernel = cpu::gemm_bf16_kernel_name(&why);
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("available", kernel != nullptr);
  out.Set("kernel", kernel ? kernel : "");
  out.Set("reason", why);
  return out;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function model_class = ModelWrap::Define(env);
  Napi::Function classifier_class = ClassifierWrap::Define(env);
  auto* data = new AddonData{Napi::Persistent(model_class), Napi::Persistent(classifier_class)};
  env.SetInstanceData(data);  // for createModel / createClassifier
  exports.Set("Model", model_class);
  exports.Set("createModel", Napi::Function::New<ModelWrap::CreateAsync>(env, "createModel"));
  exports.Set("modelMemoryPlan", Napi::Function::New<ModelWrap::MemoryPlanFor>(env, "modelMemoryPlan"));
  exports.Set("Classifier", classifier_class);
  exports.Set("createClassifier", Napi::Function::New<ClassifierWrap::CreateAsync>(env, "createClassifier"));
  exports.Set("classifierMemoryPlan", Napi::Function::New<ClassifierWrap::MemoryPlanFor>(env, "classifierMemoryPlan"));
  exports.Set("cudaInfo", Napi::Function::New<CudaInfo>(env, "cudaInfo"));
  exports.Set("defaultThreads", Napi::Function::New<DefaultThreads>(env, "defaultThreads"));
  exports.Set("cpuGemmKernel", Napi::Function::New<CpuGemmKernel>(env, "cpuGemmKernel"));
  exports.Set("cpuBf16Available", Napi::Function::New<CpuBf16Available>(env, "cpuBf16Available"));
  exports.Set("testOp", Napi::Function::New<TestOp>(env, "testOp"));
  exports.Set("testBackendOp", Napi::Function::New<TestBackendOp>(env, "testBackendOp"));
  InitDistributed(env, exports);
  return exports;
}

}  // namespace emae::napi

static Napi::Object InitEmae(Napi::Env env, Napi::Object exports) { return emae::napi::Init(env, exports); }

NODE_API_MODULE(emae, InitEmae)
