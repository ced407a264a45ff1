// Glue shared by the JS handles of the pretraining model (model_wrap.cc) and the fine-tuning
// classifier (classifier_wrap.cc): parameter tensors in and out of a flat buffer, optimizer options.
#pragma once
#include <napi.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/model.h"
#include "core/profiling_backend.h"
#include "cpu/bf16_reference_backend.h"
#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "cuda/op_timer.h"
#include "distributed/dist.h"
#include "model_wrap.h"  // AddonData, JobFailure, run_job
#include "napi_util.h"

namespace emae::napi {

// {lr, weightDecay, beta1, beta2, eps, clipGrad} → OptimOptions, range-checked (model_wrap.cc)
OptimOptions parse_optim(const Napi::Object& o);

// name → Float32Array views over one copy of a flat host buffer, for the specs selected.
template <typename Layout, typename Pred>
Napi::Object tensors_object(Napi::Env env, const Layout& layout, const std::vector<float>& flat, Pred select) {
  size_t total = 0;
  for (const auto& s : layout.specs)
    if (select(s)) total += s.size;
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, total * sizeof(float));
  float* dst = static_cast<float*>(buffer.Data());
  Napi::Object out = Napi::Object::New(env);
  size_t at = 0;
  for (const auto& s : layout.specs) {
    if (!select(s)) continue;
    std::copy(flat.begin() + s.offset, flat.begin() + s.offset + s.size, dst + at);
    out.Set(s.name, Napi::Float32Array::New(env, s.size, buffer, at * sizeof(float)));
    at += s.size;
  }
  return out;
}

// Reads name → Float32Array for the selected specs into a flat buffer; every entry is checked
// before the caller writes anything.
template <typename Layout, typename Pred>
void read_tensors(const Napi::Value& v, const Layout& layout, std::vector<float>& flat, const char* what,
                  Pred select) {
  Napi::Object o = get_object(v, what);
  for (const auto& s : layout.specs) {
    if (!select(s)) continue;
    if (!o.Has(s.name)) throw Napi::RangeError::New(v.Env(), std::string(what) + ": missing tensor " + s.name);
    auto arr = get_typed_array<float>(o.Get(s.name), std::string(what) + "." + s.name, (int64_t)s.size);
    std::copy(arr.Data(), arr.Data() + s.size, flat.begin() + s.offset);
  }
}

// The parameter and optimizer-state methods both handles share (M: emae::Model or
// emae::Classifier, whose layouts mark every tensor with an optimizer state `trainable`).
inline bool has_optimizer_state(const ParamSpec& s) { return s.trainable; }

// paramInfo(): [{ name, shape, trainable, decay, layer }] in state-dict order
template <typename M> Napi::Array param_info_array(Napi::Env env, const M& m) {
  const auto& specs = m.layout().specs;
  Napi::Array out = Napi::Array::New(env, specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", specs[i].name);
    Napi::Array shape = Napi::Array::New(env, specs[i].shape.size());
    for (size_t d = 0; d < specs[i].shape.size(); ++d) shape.Set((uint32_t)d, specs[i].shape[d]);
    o.Set("shape", shape);
    o.Set("trainable", specs[i].trainable);
    o.Set("decay", specs[i].decay);
    o.Set("layer", specs[i].layer);
    out.Set((uint32_t)i, o);
  }
  return out;
}

// getParams(): every tensor, copied
template <typename M> Napi::Object params_object(Napi::Env env, const M& m) {
  std::vector<float> flat(m.layout().total);
  m.get_params(flat.data());
  return tensors_object(env, m.layout(), flat, [](const ParamSpec&) { return true; });
}

// setParams(dict): every tensor checked before anything is written
template <typename M> void set_params_from(const Napi::Value& v, M& m) {
  std::vector<float> flat(m.layout().total);
  read_tensors(v, m.layout(), flat, "params", [](const ParamSpec&) { return true; });
  m.set_params(flat.data());
}

// getOptimizerState(): { step, expAvg, expAvgSq }
template <typename M> Napi::Object optimizer_state_object(Napi::Env env, const M& m) {
  const size_t total = m.layout().total;
  std::vector<float> avg(total), avg_sq(total);
  m.get_optimizer_state(avg.data(), avg_sq.data());
  Napi::Object out = Napi::Object::New(env);
  out.Set("step", (double)m.step());
  out.Set("expAvg", tensors_object(env, m.layout(), avg, has_optimizer_state));
  out.Set("expAvgSq", tensors_object(env, m.layout(), avg_sq, has_optimizer_state));
  return out;
}

// setOptimizerState(state): checked in full (names, sizes, finite non-negative second moments) first
template <typename M> void set_optimizer_state_from(Napi::Env env, const Napi::Value& v, M& m) {
  Napi::Object o = get_object(v, "optimizer state");
  const int step = get_int(o, "step", 0);
  const size_t total = m.layout().total;
  std::vector<float> avg(total, 0.f), avg_sq(total, 0.f);
  read_tensors(o.Get("expAvg"), m.layout(), avg, "expAvg", has_optimizer_state);
  read_tensors(o.Get("expAvgSq"), m.layout(), avg_sq, "expAvgSq", has_optimizer_state);
  for (float x : avg_sq)
    if (!(x >= 0)) throw Napi::RangeError::New(env, "expAvgSq must be finite and non-negative");
  guard(env, "setOptimizerState", [&] { m.set_optimizer_state(avg.data(), avg_sq.data(), step); });
}

// EMAE_PROFILE, read when a model or classifier is created: "1" wraps its backend in the profiling
// decorator (core/profiling_backend.h); unset, "" or "0" leave the backend as it is, at no cost.
inline bool profiling_requested(Napi::Env env) {
  const char* env_value = std::getenv("EMAE_PROFILE");
  const std::string value = env_value ? env_value : "";
  if (value.empty() || value == "0") return false;
  if (value == "1") return true;
  throw Napi::RangeError::New(env, "EMAE_PROFILE must be 1 (profile the backend's ops) or 0 / unset (off), got '" +
                                       value + "'");
}

// EMAE_ACTIVATIONS, read when a model or classifier is created (and by cudaInfo, whose GEMM path
// depends on it): the element type of the activations a backend may store narrow (core/act.h).
// unset, "" or "auto": fp32 (until a device run has verified bf16); "bf16": on CUDA the bf16
// storage and GEMMs, on the CPU the slow reference of that storage (cpu/bf16_reference_backend.h).
inline DType activations_requested(Napi::Env env) {
  const char* env_value = std::getenv("EMAE_ACTIVATIONS");
  const std::string value = env_value ? env_value : "";
  if (value.empty() || value == "auto" || value == "fp32") return DType::kF32;
  if (value == "bf16") return DType::kBF16;
  throw Napi::RangeError::New(env, "EMAE_ACTIVATIONS must be auto, fp32 or bf16 (bf16: store activations in bf16; on "
                                   "the CPU a slow reference of the GPU's storage), got '" + value + "'");
}

// The backend a model or classifier computes on: CUDA or the CPU, storing activations as
// `activations` (the CPU's bf16 is the reference decorator around the fp32 CPU backend).
inline std::unique_ptr<Backend> make_backend(const std::string& device, DType activations, bool cpu_bf16_matmul) {
  if (device == "cuda") return cuda::make_cuda_backend(dist::cuda_device(), activations);
  std::unique_ptr<Backend> cpu = cpu::make_cpu_backend(cpu_bf16_matmul);
  return activations == DType::kBF16 ? cpu::make_bf16_reference_backend(std::move(cpu)) : std::move(cpu);
}

// 'fp32' | 'bf16' (the activations of a memory plan) → DType
inline DType parse_activations(const Napi::Value& v) {
  const std::string name = v.IsString() ? v.As<Napi::String>().Utf8Value() : "";
  if (name == "fp32") return DType::kF32;
  if (name == "bf16") return DType::kBF16;
  throw Napi::TypeError::New(v.Env(), "Expected 'fp32' or 'bf16' for activations");
}

// { params, grads, optimizer, weightCopy, activations, total } in bytes (core/memory_plan.h)
inline Napi::Object memory_object(Napi::Env env, const MemoryPlan& m) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("params", (double)m.params);
  out.Set("grads", (double)m.grads);
  out.Set("optimizer", (double)m.optimizer);
  out.Set("weightCopy", (double)m.weight_copy);
  out.Set("activations", (double)m.activations);
  out.Set("total", (double)m.total());
  return out;
}

// memory(batchSize) of a live model or classifier: the plan for its own backend's types. Reads
// only the configuration and the backend's types, never backend memory, so it may run while a
// step is in flight.
inline int memory_batch(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) throw Napi::TypeError::New(env, "Expected a positive integer for batchSize");
  const double batch = v.As<Napi::Number>().DoubleValue();
  if (!(batch >= 1 && batch <= 1 << 24 && batch == (double)(int)batch))
    throw Napi::RangeError::New(env, "Expected a positive integer for batchSize");
  return (int)batch;
}
template <typename M> Napi::Value memory_of(const Napi::CallbackInfo& info, const M& m) {
  const int batch = memory_batch(info.Env(), info[0]);
  return memory_object(info.Env(), guard(info.Env(), "memory", [&] { return m.memory(batch); }));
}
// (config, batchSize, activations) → M's memory plan for `config` (parsed by the caller), nothing
// allocated; a backend storing bf16 activations has its GEMMs read the bf16 weight copy (the CUDA
// backend's pairing)
template <typename M, typename Config>
Napi::Value memory_plan_for(const Napi::CallbackInfo& info, const Config& config) {
  const int batch = memory_batch(info.Env(), info[1]);
  const DType activations = parse_activations(info[2]);
  return memory_object(info.Env(), guard(info.Env(), "memoryPlan", [&] {
    return M::memory_plan(config, batch, activations, activations);
  }));
}

// The profiling decorator around `inner`, timed by CUDA events on a CUDA backend's stream, else by
// the host clock (the CPU backend's ops are synchronous).
inline std::unique_ptr<Backend> profiled(std::unique_ptr<Backend> inner) {
  const cuda::CudaPlacement where = cuda::placement_of(*inner);
  std::unique_ptr<OpClock> clock = where.device >= 0 ? cuda::make_event_clock(where) : make_host_clock();
  return std::make_unique<ProfilingBackend>(std::move(inner), std::move(clock));
}

// profile({ reset }): null when the backend is not profiled, else { timing, steps, stepMs, opsMs,
// rows: [{ op, shape, calls, totalMs }] } (rows by time, largest first). Waits for the device to
// finish what was recorded.
inline Napi::Value profile_object(const Napi::CallbackInfo& info, Backend& backend) {
  Napi::Env env = info.Env();
  const bool reset = get_bool(get_object(info[0], "profile options"), "reset");
  ProfilingBackend* profiler = profiling_of(backend);
  if (!profiler) return env.Null();
  const ProfileReport r = guard(env, "profile", [&] { return profiler->report(reset); });
  Napi::Object out = Napi::Object::New(env);
  out.Set("timing", r.timing);
  out.Set("steps", (double)r.steps);
  out.Set("stepMs", r.step_ms);
  out.Set("opsMs", r.ops_ms);
  Napi::Array rows = Napi::Array::New(env, r.rows.size());
  for (size_t i = 0; i < r.rows.size(); ++i) {
    Napi::Object row = Napi::Object::New(env);
    row.Set("op", r.rows[i].op);
    row.Set("shape", r.rows[i].shape);
    row.Set("calls", (double)r.rows[i].calls);
    row.Set("totalMs", r.rows[i].ms);
    rows.Set((uint32_t)i, row);
  }
  out.Set("rows", rows);
  return out;
}

// Queues a worker and returns its promise (the worker deletes itself when done).
template <typename Worker> Napi::Promise queue(Worker* worker) {
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

// createModel / createClassifier: builds an M (allocation, initialization, upload) on the compute
// thread, then resolves with the JS handle made by the constructor `handle` of AddonData.
template <typename M, typename Config> class CreateWorker : public Napi::AsyncWorker {
 public:
  CreateWorker(Napi::Env env, const char* op, Config config, std::string device, Napi::FunctionReference AddonData::*handle)
      : Napi::AsyncWorker(env, op),
        deferred_(Napi::Promise::Deferred::New(env)),
        op_(op),
        config_(config),
        device_(std::move(device)),
        handle_(handle),
        profile_(profiling_requested(env)),
        activations_(activations_requested(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    failure_ = run_job([this] {
      omp_set_num_threads(config_.threads);
      std::unique_ptr<Backend> backend = make_backend(device_, activations_, config_.cpu_bf16_matmul);
      if (profile_) backend = profiled(std::move(backend));
      model_ = std::make_unique<M>(config_, std::move(backend));
    });
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (failure_.failed) {
      deferred_.Reject(make_error(env, failure_.kind, std::string(op_) + ": " + failure_.message, failure_.code).Value());
      return;
    }
    M* raw = model_.release();
    try {
      deferred_.Resolve((env.GetInstanceData<AddonData>()->*handle_).New({Napi::External<M>::New(env, raw)}));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const char* op_;
  Config config_;
  std::string device_;
  Napi::FunctionReference AddonData::*handle_;
  bool profile_;       // EMAE_PROFILE=1
  DType activations_;  // EMAE_ACTIVATIONS
  std::unique_ptr<M> model_;
  JobFailure failure_;
};

}  // namespace emae::napi
