// NCCL loaded at run time (see nccl.h). Only the few entry points emae calls are resolved with
// dlsym; their C declarations are NCCL's stable ABI (nccl.h): enums are ints, a communicator is
// an opaque pointer, the unique id is 128 bytes. When a real nccl.h is on the include path it is
// used instead, so the compiler checks these declarations against it.
#include "distributed/nccl.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#if __has_include(<nccl.h>)
#include <nccl.h>
#else
extern "C" {
typedef struct ncclComm* ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef enum { ncclSuccess = 0, ncclInProgress = 7 } ncclResult_t;
typedef enum { ncclFloat32 = 7 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;
}
#endif

namespace emae::dist::nccl {
namespace {

struct Api {
  ncclResult_t (*get_version)(int*);
  ncclResult_t (*get_unique_id)(ncclUniqueId*);
  ncclResult_t (*comm_init_rank)(ncclComm_t*, int, ncclUniqueId, int);
  ncclResult_t (*all_reduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t);
  ncclResult_t (*comm_get_async_error)(ncclComm_t, ncclResult_t*);
  ncclResult_t (*comm_abort)(ncclComm_t);
  ncclResult_t (*comm_destroy)(ncclComm_t);
  const char* (*get_error_string)(ncclResult_t);
};

Api g_api{};
std::string g_load_error = "not loaded yet";
std::string g_version;
bool g_loaded = false, g_tried = false;
ncclComm_t g_comm = nullptr;

std::string text_of(ncclResult_t r) {
  const char* s = g_api.get_error_string ? g_api.get_error_string(r) : nullptr;
  return s ? std::string(s) : "NCCL error " + std::to_string((int)r);
}

void check(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return;
  if (g_comm) {  // a failed collective leaves the communicator unusable: abort it (Horovod does too)
    g_api.comm_abort(g_comm);
    g_comm = nullptr;
  }
  throw std::runtime_error(std::string(what) + " failed: " + text_of(r));
}

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(e));
}

template <typename F> bool resolve(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  return out != nullptr;
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string load(std::string* version) {
  if (!g_tried) {
    g_tried = true;
    const char* env = std::getenv("EMAE_NCCL_LIBRARY");
    const std::string file = env && *env ? env : "libnccl.so.2";
    void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      g_load_error = "could not load " + file + " (" + (why ? why : "unknown error") +
                     "); install NCCL (e.g. apt-get install libnccl2, or pip install nvidia-nccl-cu12) and put "
                     "libnccl.so.2 on LD_LIBRARY_PATH, or set EMAE_NCCL_LIBRARY to its path";
    } else if (!resolve(lib, "ncclGetVersion", g_api.get_version) || !resolve(lib, "ncclGetUniqueId", g_api.get_unique_id) ||
               !resolve(lib, "ncclCommInitRank", g_api.comm_init_rank) || !resolve(lib, "ncclAllReduce", g_api.all_reduce) ||
               !resolve(lib, "ncclCommGetAsyncError", g_api.comm_get_async_error) ||
               !resolve(lib, "ncclCommAbort", g_api.comm_abort) || !resolve(lib, "ncclCommDestroy", g_api.comm_destroy) ||
               !resolve(lib, "ncclGetErrorString", g_api.get_error_string)) {
      g_load_error = file + " lacks an NCCL entry point emae needs (NCCL 2.4 or newer is required)";
    } else {
      int code = 0;
      g_api.get_version(&code);
      // NCCL >= 2.9 encodes major·10000 + minor·100 + patch, older ones major·1000 + minor·100 + patch
      const int major = code >= 10000 ? code / 10000 : code / 1000;
      const int minor = code >= 10000 ? (code % 10000) / 100 : (code % 1000) / 100;
      g_version = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(code % 100);
      g_loaded = true;
      g_load_error.clear();
    }
  }
  if (version) *version = g_version;
  return g_loaded ? std::string() : g_load_error;
}

void init(int rank, int size, int device, const std::string& refused, const std::function<int(int)>& least,
          const std::function<void(void*, size_t, int)>& broadcast) {
  if (!g_loaded) throw std::runtime_error("NCCL is not loaded: " + g_load_error);
  if (g_comm) return;
  // What rank 0 sends every rank: the unique id, or (from the first rank that failed) its error.
  struct Message {
    char error[512];
    ncclUniqueId id;
  };
  Message msg;
  std::memset(&msg, 0, sizeof msg);
  std::string failure = refused;
  if (failure.empty()) {
    if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
      failure = "cudaSetDevice(" + std::to_string(device) + ") failed: " + cudaGetErrorString(e);
    } else if (rank == 0) {
      if (const ncclResult_t r = g_api.get_unique_id(&msg.id); r != ncclSuccess) failure = "ncclGetUniqueId failed: " + text_of(r);
    }
  }
  // Every rank makes both collectives whatever happened here, so none is left waiting.
  const int failed = least(failure.empty() ? size : rank);
  if (failed == rank) std::snprintf(msg.error, sizeof msg.error, "%s", failure.c_str());
  broadcast(&msg, sizeof msg, failed < size ? failed : 0);
  if (failed < size) {
    msg.error[sizeof msg.error - 1] = 0;
    throw std::runtime_error("NCCL setup failed on rank " + std::to_string(failed) + " of " + std::to_string(size) + ": " +
                             msg.error);
  }
  const ncclUniqueId id = msg.id;
  ncclComm_t comm = nullptr;
  const ncclResult_t r = g_api.comm_init_rank(&comm, size, id, rank);
  if (r != ncclSuccess) throw std::runtime_error("ncclCommInitRank failed: " + text_of(r));
  g_comm = comm;
}

bool ready() { return g_comm != nullptr; }

void allreduce_sum(float* device_data, size_t count, void* stream_ptr) {
  if (!g_comm) throw std::runtime_error("NCCL all-reduce: no communicator (initDistributed has not set one up)");
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  check(g_api.all_reduce(device_data, device_data, count, ncclFloat32, ncclSum, g_comm, stream), "ncclAllReduce");
  // Wait without blocking in cudaStreamSynchronize, so that a peer's failure (reported
  // asynchronously by NCCL) ends the wait with an error instead of a hang.
  for (;;) {
    const cudaError_t q = cudaStreamQuery(stream);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) check_cuda(q, "NCCL all-reduce (cudaStreamQuery)");
    ncclResult_t async = ncclSuccess;
    check(g_api.comm_get_async_error(g_comm, &async), "ncclCommGetAsyncError");
    check(async, "NCCL all-reduce (asynchronous error)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void destroy() {
  if (!g_comm) return;
  g_api.comm_destroy(g_comm);
  g_comm = nullptr;
}

}  // namespace emae::dist::nccl
