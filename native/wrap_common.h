// Glue shared by the JS handles of the pretraining model (model_wrap.cc) and the fine-tuning
// classifier (classifier_wrap.cc): parameter tensors in and out of a flat buffer, optimizer options.
#pragma once
#include <napi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/model.h"
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

}  // namespace emae::napi
