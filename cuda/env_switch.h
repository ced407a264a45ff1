// The CUDA backend's runtime switches (EMAE_CUDA_GEMM, EMAE_CUDA_ATTENTION, EMAE_CUDA_STEP_SYNC)
// read one way: the variable's value, "auto" when unset or empty, refused with the same sentence
// when it is not one of the allowed values (the backend's creation then fails with it).
#pragma once
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace emae::cuda {

// allowed: the values in the order the message lists them, "auto" among them
inline std::string env_switch(const char* name, std::initializer_list<const char*> allowed) {
  const char* env = std::getenv(name);
  const std::string want = env && *env ? env : "auto";
  std::string listed;
  size_t i = 0;
  for (const char* value : allowed) {
    if (want == value) return want;
    listed += (i == 0 ? "" : i + 1 == allowed.size() ? " or " : ", ") + std::string(value);
    ++i;
  }
  throw std::invalid_argument(std::string(name) + " must be " + listed + ", got '" + want + "'");
}

}  // namespace emae::cuda
