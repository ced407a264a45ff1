// Exceptions the core throws; the addon maps them to JS error classes.
#pragma once
#include <cstddef>
#include <stdexcept>
#include <string>

namespace emae {

// A value out of range (JS RangeError).
struct RangeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// An argument of the wrong kind (JS TypeError).
struct TypeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// An allocation the backend could not satisfy; names the bytes asked for.
struct OutOfMemory : std::runtime_error {
  OutOfMemory(const std::string& where, size_t bytes)
      : std::runtime_error(where + ": out of memory allocating " + std::to_string(bytes) + " bytes"), bytes(bytes) {}
  size_t bytes;
};

}  // namespace emae
