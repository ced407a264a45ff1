// The Node-API surface of data parallelism (glue only; the work is in dist.cc): joining the MPI
// job, host all-reduces, the all-reduce of a model's gradients, barrier, finalize, abort. Every
// collective runs as async work on the compute thread, so the event loop stays free while it
// waits for the other ranks.
#include <napi.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/dist.h"
#include "model_wrap.h"
#include "napi_util.h"
#include "wrap_common.h"

namespace emae::napi {
namespace {

// A collective as async work: `job` on the compute thread, then `done` builds the result on the
// JS thread (undefined when none).
class DistWorker : public Napi::AsyncWorker {
 public:
  DistWorker(Napi::Env env, const char* op, std::function<void()> job,
             std::function<Napi::Value(Napi::Env)> done = nullptr, ModelWrap* busy = nullptr)
      : Napi::AsyncWorker(env, op), deferred_(Napi::Promise::Deferred::New(env)), op_(op), job_(std::move(job)),
        done_(std::move(done)), busy_(busy) {
    if (busy_) busy_->set_busy(true);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  void keep_alive(Napi::Object o) { self_ = Napi::Persistent(o); }
  void Execute() override { failure_ = run_job(job_); }
  void OnOK() override {
    Napi::Env env = Env();
    if (busy_) busy_->set_busy(false);
    if (failure_.failed) {
      deferred_.Reject(make_error(env, failure_.kind, std::string(op_) + ": " + failure_.message, failure_.code).Value());
      return;
    }
    try {
      deferred_.Resolve(done_ ? done_(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    if (busy_) busy_->set_busy(false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  const char* op_;
  std::function<void()> job_;
  std::function<Napi::Value(Napi::Env)> done_;
  ModelWrap* busy_;
  Napi::ObjectReference self_;
  JobFailure failure_;
};

Napi::Object status_object(Napi::Env env, const dist::Status& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("initialized", s.initialized);
  o.Set("rank", s.rank);
  o.Set("size", s.size);
  o.Set("localRank", s.local_rank);
  o.Set("localSize", s.local_size);
  o.Set("cudaDevice", s.cuda_device);
  o.Set("collectives", s.collectives);
  o.Set("mpiLibrary", s.mpi_library);
  o.Set("ncclVersion", s.nccl_version);
  o.Set("ncclUnavailable", s.nccl_unavailable);
  o.Set("threadLevel", s.thread_level);
  o.Set("collectiveCalls", (double)s.collective_calls);
  return o;
}

dist::ReduceOp parse_op(Napi::Env env, const std::string& op) {
  if (op == "sum") return dist::ReduceOp::Sum;
  if (op == "max") return dist::ReduceOp::Max;
  if (op == "min") return dist::ReduceOp::Min;
  throw Napi::RangeError::New(env, "Expected 'sum', 'max' or 'min' for op but received '" + op + "'");
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  const dist::BuildInfo b = dist::build_info();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("mpi", b.mpi_built);
  o.Set("mpiPlugin", b.mpi_plugin);
  o.Set("ncclLoader", b.nccl_loader);
  return o;
}

Napi::Value Status(const Napi::CallbackInfo& info) { return status_object(info.Env(), dist::status()); }

// distInit({ collectives }) → Promise<status>
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Napi::Object o = get_object(info[0], "distributed options");
  const std::string collectives = get_string(o, "collectives");
  const bool single = o.Has("single") && get_bool(o, "single");
  if (collectives != "auto" && collectives != "mpi" && collectives != "nccl")
    throw Napi::RangeError::New(env, "Expected 'auto', 'mpi' or 'nccl' for collectives but received '" + collectives + "'");
  return queue(new DistWorker(env, "initDistributed", [collectives, single] { dist::init(collectives, single); },
                              [](Napi::Env e) { return status_object(e, dist::status()); }));
}

// The all-reduce of a copy of a typed array, resolved as a new typed array of the same type.
template <typename T, typename ArrayT>
Napi::Value reduce_copy(Napi::Value value, dist::ReduceOp op, dist::ReduceType type) {
  auto in = value.As<ArrayT>();
  auto data = std::make_shared<std::vector<T>>(in.Data(), in.Data() + in.ElementLength());
  return queue(new DistWorker(
      value.Env(), "allReduce", [data, op, type] { dist::allreduce(data->data(), data->size(), type, op); },
      [data](Napi::Env e) -> Napi::Value {
        auto out = ArrayT::New(e, data->size());
        std::copy(data->begin(), data->end(), out.Data());
        return out;
      }));
}

// distAllReduce(Float32Array | Float64Array, 'sum' | 'max' | 'min') → Promise<a reduced copy>
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) throw Napi::TypeError::New(env, "Expected a Float32Array or Float64Array for data");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "Expected a string for op");
  const dist::ReduceOp op = parse_op(env, info[1].As<Napi::String>().Utf8Value());
  const auto type = info[0].As<Napi::TypedArray>().TypedArrayType();
  if (type == napi_float32_array) return reduce_copy<float, Napi::Float32Array>(info[0], op, dist::ReduceType::Float32);
  if (type == napi_float64_array) return reduce_copy<double, Napi::Float64Array>(info[0], op, dist::ReduceType::Float64);
  throw Napi::TypeError::New(env, "Expected a Float32Array or Float64Array for data");
}

// distAllReduceGrads(model, { average, bucketFloats }) → Promise<void>
Napi::Value AllReduceGrads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* ctor = &env.GetInstanceData<AddonData>()->model;
  if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(ctor->Value()))
    throw Napi::TypeError::New(env, "Expected a native Model for model");
  ModelWrap* wrap = ModelWrap::Unwrap(info[0].As<Napi::Object>());
  wrap->check_usable(env, "allReduceGradients");
  Napi::Object o = get_object(info[1], "all-reduce options");
  const bool average = get_bool(o, "average");
  const int bucket = get_int(o, "bucketFloats", 1);
  Model* model = &wrap->model();
  auto* w = new DistWorker(env, "allReduceGradients",
                           [model, average, bucket] { dist::allreduce_gradients(*model, average, (size_t)bucket); },
                           nullptr, wrap);
  w->keep_alive(info[0].As<Napi::Object>());
  return queue(w);
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  return queue(new DistWorker(info.Env(), "barrier", [] { dist::barrier(); }));
}

Napi::Value Finalize(const Napi::CallbackInfo& info) {
  return queue(new DistWorker(info.Env(), "finalizeDistributed", [] { dist::finalize(); }));
}

// distAbort(code): MPI_Abort; the launcher ends every rank. Does not return.
Napi::Value Abort(const Napi::CallbackInfo& info) {
  int code = 1;
  if (info[0].IsNumber()) code = info[0].As<Napi::Number>().Int32Value();
  dist::abort(code);
}

}  // namespace

void InitDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("distBuildInfo", Napi::Function::New<BuildInfo>(env, "distBuildInfo"));
  exports.Set("distStatus", Napi::Function::New<Status>(env, "distStatus"));
  exports.Set("distInit", Napi::Function::New<Init>(env, "distInit"));
  exports.Set("distAllReduce", Napi::Function::New<AllReduce>(env, "distAllReduce"));
  exports.Set("distAllReduceGrads", Napi::Function::New<AllReduceGrads>(env, "distAllReduceGrads"));
  exports.Set("distBarrier", Napi::Function::New<Barrier>(env, "distBarrier"));
  exports.Set("distFinalize", Napi::Function::New<Finalize>(env, "distFinalize"));
  exports.Set("distAbort", Napi::Function::New<Abort>(env, "distAbort"));
}

}  // namespace emae::napi
