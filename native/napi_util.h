// Small helpers for the Node-API glue: checked reads of option objects (TypeError/RangeError
// naming the key, never an unchecked cast) and the mapping of core exceptions to JS errors.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <string>

#include "core/errors.h"

namespace emae::napi {

inline Napi::Object get_object(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || v.IsArray()) throw Napi::TypeError::New(v.Env(), std::string("Expected an object for ") + what);
  return v.As<Napi::Object>();
}

inline double get_number(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("Expected a number for ") + key);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) throw Napi::RangeError::New(o.Env(), std::string("Expected a finite number for ") + key);
  return d;
}

inline int get_int(const Napi::Object& o, const char* key, int min_value = std::numeric_limits<int>::min()) {
  const double d = get_number(o, key);
  if (d != std::floor(d) || d < min_value || d > std::numeric_limits<int>::max())
    throw Napi::RangeError::New(o.Env(), std::string("Expected an integer >= ") + std::to_string(min_value) +
                                             " for " + key + " but received " + std::to_string(d));
  return (int)d;
}

inline bool get_bool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("Expected a boolean for ") + key);
  return v.As<Napi::Boolean>().Value();
}

inline std::string get_string(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("Expected a string for ") + key);
  return v.As<Napi::String>().Utf8Value();
}

template <typename T> struct TypedArrayName;
template <> struct TypedArrayName<float> {
  static constexpr napi_typedarray_type type = napi_float32_array;
  static constexpr const char* name = "Float32Array";
};
template <> struct TypedArrayName<int32_t> {
  static constexpr napi_typedarray_type type = napi_int32_array;
  static constexpr const char* name = "Int32Array";
};
template <> struct TypedArrayName<double> {
  static constexpr napi_typedarray_type type = napi_float64_array;
  static constexpr const char* name = "Float64Array";
};

// A typed array of exactly `length` elements of T (length < 0: any length).
template <typename T>
Napi::TypedArrayOf<T> get_typed_array(const Napi::Value& v, const std::string& key, int64_t length = -1) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != TypedArrayName<T>::type)
    throw Napi::TypeError::New(v.Env(), "Expected a " + std::string(TypedArrayName<T>::name) + " for " + key);
  auto arr = v.As<Napi::TypedArrayOf<T>>();
  if (length >= 0 && (int64_t)arr.ElementLength() != length)
    throw Napi::RangeError::New(v.Env(), "Expected " + std::to_string(length) + " elements for " + key +
                                             " but received " + std::to_string(arr.ElementLength()));
  return arr;
}

// The kind of JS error a core exception becomes.
enum class ErrorKind { Error, TypeError, RangeError };

inline ErrorKind classify(const std::exception& e) {
  if (dynamic_cast<const emae::RangeError*>(&e)) return ErrorKind::RangeError;
  if (dynamic_cast<const emae::TypeError*>(&e)) return ErrorKind::TypeError;
  return ErrorKind::Error;
}

inline Napi::Error make_error(Napi::Env env, ErrorKind kind, const std::string& message, const char* code = nullptr) {
  Napi::Error err = kind == ErrorKind::RangeError  ? Napi::RangeError::New(env, message)
                    : kind == ErrorKind::TypeError ? Napi::TypeError::New(env, message)
                                                   : Napi::Error::New(env, message);
  if (code) err.Set("code", Napi::String::New(env, code));
  return err;
}

// Runs fn, turning core exceptions into JS errors prefixed with the operation's name.
template <typename Fn> auto guard(Napi::Env env, const char* op, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw make_error(env, ErrorKind::Error, std::string(op) + ": out of memory");
  } catch (const std::exception& e) {
    throw make_error(env, classify(e), std::string(op) + ": " + e.what());
  }
}

}  // namespace emae::napi
