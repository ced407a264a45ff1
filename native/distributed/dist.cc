// See dist.h. The MPI plugin is found next to the addon (dladdr of a function of ours gives the
// addon's path) unless EMAE_MPI_PLUGIN names it.
#include "distributed/dist.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "core/errors.h"
#include "core/model.h"
#include "cuda/cuda_backend.h"
#include "distributed/mpi_plugin.h"
#if EMAE_WITH_CUDA
#include "distributed/nccl.h"
#endif

namespace emae::dist {
namespace {

// The plugin's table: set on the compute thread, read by abort() from any thread.
std::atomic<const EmaeMpiApi*> g_mpi{nullptr};
// Written only on the compute thread, under g_status_mutex; the compute thread reads it without
// the lock (it is the only writer), other threads through status(), which copies under it.
std::mutex g_status_mutex;
Status g_status;
std::atomic<bool> g_finalized{false};
std::atomic<uint64_t> g_collective_calls{0};
bool g_single = false;  // the one-process NCCL check (init with `single`); compute thread only

void set_status(const Status& s) {
  std::lock_guard<std::mutex> lock(g_status_mutex);
  g_status = s;
}

constexpr const char* kInstallMpi =
    "install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev; RHEL: dnf install openmpi-devel; "
    "a cluster: module load openmpi) and rebuild emae (npm rebuild emae) so that its build finds MPI";

std::string plugin_path() {
  if (const char* env = std::getenv("EMAE_MPI_PLUGIN"); env && *env) return env;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&plugin_path), &info) && info.dli_fname) {
    std::string self = info.dli_fname;
    const size_t slash = self.find_last_of('/');
    return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/emae_mpi.so";
  }
  return "emae_mpi.so";
}

const EmaeMpiApi& load_plugin() {
  if (const EmaeMpiApi* loaded = g_mpi.load()) return *loaded;
  const std::string file = plugin_path();
#if !EMAE_WITH_MPI
  if (!std::getenv("EMAE_MPI_PLUGIN"))
    throw std::runtime_error("this build of emae has no MPI support (CMake's FindMPI found no MPI when it was built); " +
                             std::string(kInstallMpi));
#endif
  void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* why = dlerror();
    throw std::runtime_error("could not load emae's MPI plugin " + file + " (" + (why ? why : "unknown error") + "); " +
                             kInstallMpi);
  }
  auto fn = reinterpret_cast<EmaeMpiApiFn>(dlsym(lib, "emae_mpi_api"));
  const EmaeMpiApi* api = fn ? fn() : nullptr;
  if (!api || api->abi_version != EMAE_MPI_ABI_VERSION)
    throw std::runtime_error(file + " is not an emae MPI plugin of this version (rebuild emae: npm rebuild emae)");
  g_mpi = api;
  return *api;
}

void check(int rc, const char* err) {
  if (rc != 0) throw std::runtime_error(err);
}

const EmaeMpiApi& mpi() {
  const EmaeMpiApi* api = g_mpi.load();
  if (!g_status.initialized || !api) throw std::runtime_error("no distributed job: call initDistributed() first");
  if (g_finalized) throw std::runtime_error("the distributed job has been finalized");
  return *api;
}

// The MPI collectives, counted (Status::collective_calls).
void mpi_allreduce(const EmaeMpiApi& api, void* data, size_t count, int type, int op) {
  char err[512] = {0};
  ++g_collective_calls;
  check(api.allreduce(data, count, type, op, err, sizeof err), err);
}
[[maybe_unused]] void mpi_broadcast(const EmaeMpiApi& api, void* data, size_t bytes, int root) {
  char err[512] = {0};
  ++g_collective_calls;
  check(api.broadcast(data, bytes, root, err, sizeof err), err);
}

}  // namespace

BuildInfo build_info() {
  BuildInfo b;
  b.mpi_built = EMAE_WITH_MPI != 0;
  b.mpi_plugin = plugin_path();
  b.nccl_loader = EMAE_WITH_CUDA != 0;
  return b;
}

Status status() {
  std::lock_guard<std::mutex> lock(g_status_mutex);
  Status s = g_status;
  s.collective_calls = g_collective_calls.load();
  return s;
}
int cuda_device() {
  std::lock_guard<std::mutex> lock(g_status_mutex);
  return g_status.cuda_device;
}

// One process, NCCL alone (no MPI): a one-rank communicator on device 0.
Status init_single_nccl() {
  std::string why;
#if EMAE_WITH_CUDA
  Status s;
  if (nccl::device_count() == 0) {
    why = "no CUDA device";
  } else {
    why = nccl::load(&s.nccl_version);
  }
  if (why.empty()) {
    s.initialized = true;
    s.collectives = "nccl";
    g_single = true;
    set_status(s);
    return s;
  }
#else
  why = "this build of emae has no CUDA backend (built without a CUDA compiler)";
#endif
  throw std::runtime_error("collectives 'nccl' was asked for but NCCL is not usable: " + why);
}

Status init(const std::string& collectives, bool single) {
  if (collectives != "auto" && collectives != "mpi" && collectives != "nccl")
    throw RangeError("Expected 'auto', 'mpi' or 'nccl' for collectives but received '" + collectives + "'");
  if (g_finalized) throw std::runtime_error("initDistributed: MPI was finalized in this process and cannot start again");
  if (g_status.initialized) return g_status;
  if (single) {
    if (collectives != "nccl") throw RangeError("a single process joins no job except with collectives 'nccl'");
    return init_single_nccl();
  }
  const EmaeMpiApi& api = load_plugin();
  char err[512] = {0};
  EmaeMpiInit info{};
  check(api.init(&info, err, sizeof err), err);
  Status s;
  s.initialized = true;
  s.rank = info.rank;
  s.size = info.size;
  s.local_rank = info.local_rank;
  s.local_size = info.local_size;
  s.thread_level = info.thread_level;
  s.mpi_library = info.library;
  s.collectives = "mpi";
  // The CUDA device: the local rank, wrapping around when ranks outnumber this node's GPUs
  // (ranks then share a GPU, which only the host-staged MPI path allows).
  int devices = 0;
#if EMAE_WITH_CUDA
  devices = nccl::device_count();
#endif
  s.cuda_device = devices > 0 ? s.local_rank % devices : 0;
  if (collectives != "mpi") {
    std::string why;
#if EMAE_WITH_CUDA
    if (devices == 0) {
      why = "no CUDA device on rank " + std::to_string(s.rank);
    } else if (s.local_size > devices) {
      why = std::to_string(s.local_size) + " ranks share " + std::to_string(devices) + " GPU(s) on the node of rank " +
            std::to_string(s.rank) + " (NCCL refuses two ranks on one GPU before 2.30; use one rank per GPU)";
    } else {
      why = nccl::load(&s.nccl_version);
      if (!why.empty()) why = "rank " + std::to_string(s.rank) + ": " + why;
    }
#else
    why = "this build of emae has no CUDA backend (built without a CUDA compiler)";
#endif
    // Every rank must take the same path: NCCL only if it works everywhere.
    double ok = why.empty() ? 1.0 : 0.0;
    if (s.size > 1) mpi_allreduce(api, &ok, 1, EMAE_MPI_FLOAT64, EMAE_MPI_MIN);
    if (ok == 1.0) {
      s.collectives = "nccl";
    } else {
      s.nccl_unavailable = why.empty() ? "another rank cannot use NCCL" : why;
      if (collectives == "nccl")
        throw std::runtime_error("collectives 'nccl' was asked for but NCCL is not usable: " + s.nccl_unavailable +
                                 " (collectives 'auto' falls back to host-staged MPI)");
    }
  }
  set_status(s);
  return s;
}

void allreduce(void* data, size_t count, ReduceType type, ReduceOp op) {
  const EmaeMpiApi& api = mpi();
  if (g_status.size == 1) return;  // sum, max and min over one rank: the data as it is
  const int t = type == ReduceType::Float32 ? EMAE_MPI_FLOAT32 : EMAE_MPI_FLOAT64;
  const int o = op == ReduceOp::Sum ? EMAE_MPI_SUM : op == ReduceOp::Max ? EMAE_MPI_MAX : EMAE_MPI_MIN;
  mpi_allreduce(api, data, count, t, o);
}

void allreduce_gradients(Model& model, bool average, size_t bucket_floats) {
  if (!g_status.initialized) throw std::runtime_error("no distributed job: call initDistributed() first");
  if (g_finalized) throw std::runtime_error("the distributed job has been finalized");
  // One rank: the sum over the ranks is this rank's gradients and the mean divides by 1, so
  // there is nothing to copy, reduce or scale, whatever the backend and collectives. The
  // one-process NCCL check alone goes on: all-reducing over its one-rank communicator is its point.
  if (g_status.size == 1 && !g_single) return;
  float* grads = model.grad_buffer();
  const size_t total = model.layout().total;
  Backend& be = model.backend();
  const cuda::CudaPlacement where = cuda::placement_of(be);
  if (where.device < 0) {
    // CPU model: the gradients are host memory; MPI reduces them in place
    mpi_allreduce(mpi(), grads, total, EMAE_MPI_FLOAT32, EMAE_MPI_SUM);
  } else if (g_status.collectives == "nccl") {
#if EMAE_WITH_CUDA
    if (!nccl::ready()) {
      // refused on this rank alone: still taken through nccl::init's collectives (see nccl.h)
      const std::string refused =
          where.device == g_status.cuda_device
              ? std::string()
              : "the model is on CUDA device " + std::to_string(where.device) + " but this rank's device is " +
                    std::to_string(g_status.cuda_device) + " (create models after initDistributed())";
      const bool many = g_status.size > 1;  // false only for the one-process check (no MPI)
      nccl::init(
          g_status.rank, g_status.size, where.device, refused,
          [&](int value) {  // the least value over the ranks
            double v = value;
            if (many) mpi_allreduce(mpi(), &v, 1, EMAE_MPI_FLOAT64, EMAE_MPI_MIN);
            return (int)v;
          },
          [&](void* buf, size_t bytes, int root) {
            if (many) mpi_broadcast(mpi(), buf, bytes, root);
          });
    }
    ++g_collective_calls;
    nccl::allreduce_sum(grads, total, where.stream);  // one bucket: the whole contiguous buffer
#endif
  } else {
    // host-staged: bucket by bucket, device → host, MPI, host → device
    const EmaeMpiApi& api = mpi();
    const size_t bucket = std::max<size_t>(1, std::min(bucket_floats, total));
    std::vector<float> host(bucket);
    for (size_t at = 0; at < total; at += bucket) {
      const size_t n = std::min(bucket, total - at);
      be.download(host.data(), grads + at, n * sizeof(float));
      mpi_allreduce(api, host.data(), n, EMAE_MPI_FLOAT32, EMAE_MPI_SUM);
      be.upload(grads + at, host.data(), n * sizeof(float));
    }
  }
  if (average && g_status.size > 1) {
    const ParamSegment all{0, total, false, 1.0};
    be.scale(grads, &all, 1, 1.f / (float)g_status.size);
  }
}

void barrier() {
  const EmaeMpiApi& api = mpi();
  if (g_status.size == 1) return;
  char err[512] = {0};
  ++g_collective_calls;
  check(api.barrier(err, sizeof err), err);
}

void finalize() {
  if (!g_status.initialized || g_finalized) return;
#if EMAE_WITH_CUDA
  nccl::destroy();
#endif
  char err[512] = {0};
  g_finalized = true;
  if (const EmaeMpiApi* api = g_mpi.load()) check(api->finalize(err, sizeof err), err);  // none for a single NCCL process
}

void abort(int code) {
  // any thread: g_status.initialized is not read here (the compute thread may be writing it);
  // the plugin's abort() itself checks that MPI is running
  if (const EmaeMpiApi* api = g_mpi.load(); api && !g_finalized) api->abort(code);  // does not return
  std::_Exit(code);
}

}  // namespace emae::dist
