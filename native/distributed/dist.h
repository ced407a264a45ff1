// Data parallelism inside the addon: the process's place in an MPI job (rank, world size, local
// rank, CUDA device), host all-reduces over MPI, and the all-reduce of a model's gradient buffer
// (NCCL for CUDA models where every rank has it, host-staged MPI otherwise, MPI in place for CPU
// models). MPI comes from the plugin emae_mpi.so (mpi_plugin.h), NCCL from libnccl.so.2
// (nccl.h); both are loaded only when a job of more than one rank asks for them.
//
// Thread rule: every function here but abort() and the getters runs on the compute thread
// (compute_thread.h), the one thread that makes MPI and NCCL calls. The getters may be called
// from any thread (distStatus runs on the JS thread while initDistributed runs on the compute
// thread): the state they read is written under a mutex, and status() returns a copy.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace emae {
class Model;
}

namespace emae::dist {

enum class ReduceType { Float32, Float64 };
enum class ReduceOp { Sum, Max, Min };

struct Status {
  bool initialized = false;
  int rank = 0, size = 1, local_rank = 0, local_size = 1;
  int cuda_device = 0;            // the device CUDA models of this rank use
  std::string collectives = "none";  // 'none' (one rank), 'mpi', or 'nccl' (CUDA models; CPU ones use MPI)
  std::string mpi_library;        // MPI_Get_library_version, first line
  std::string nccl_version;       // when collectives is 'nccl'
  std::string nccl_unavailable;   // why NCCL is not used, when it is not
  int thread_level = 0;
  // MPI and NCCL collective calls this process has made (all-reduces, broadcasts, barriers);
  // a job of one rank makes none
  uint64_t collective_calls = 0;
};

// What the build has: the plugin's expected path, whether it was built, whether NCCL can be tried.
struct BuildInfo {
  bool mpi_built = false;   // the build found MPI and made emae_mpi.so
  std::string mpi_plugin;   // where it is looked for (EMAE_MPI_PLUGIN overrides)
  bool nccl_loader = false; // built with CUDA: libnccl.so.2 is tried at run time
};
BuildInfo build_info();

// Joins the MPI job: loads the plugin, MPI_Init_thread, rank/size/local rank, picks the CUDA
// device (local rank, modulo the devices this node has) and the collectives: 'auto' takes NCCL
// when every rank can load it and has a GPU of its own, else MPI; 'nccl' requires it; 'mpi'
// never uses it. Collective over every rank. Throws with what to install when MPI is missing.
// `single`: a process no launcher started, asking for NCCL alone (collectives 'nccl', world size
// 1, no MPI): the whole data-parallel step over a one-rank communicator, to check NCCL on one GPU.
Status init(const std::string& collectives, bool single = false);
// A copy of the current status (any thread).
Status status();
// The CUDA device new CUDA models use (0 outside a job).
int cuda_device();

// In place over host memory, every rank. One rank: nothing to do, no MPI call.
void allreduce(void* data, size_t count, ReduceType type, ReduceOp op);
// Sums the model's whole gradient buffer over the ranks (in buckets of bucket_floats on the
// host-staged path), then scales by 1/world size when average. Collective. A job of one rank
// (an MPI world of size 1) returns at once: no copy, no MPI or NCCL call, whatever the backend;
// only the one-process NCCL check (init with `single`) all-reduces over its one-rank communicator.
void allreduce_gradients(Model& model, bool average, size_t bucket_floats);
void barrier();  // one rank: no MPI call
// Ends MPI (and NCCL). Collective; later collectives throw.
void finalize();
// MPI_Abort: the launcher ends every rank. Any thread; never returns.
[[noreturn]] void abort(int code);

}  // namespace emae::dist
