// NCCL for the gradient all-reduce of CUDA models, loaded at run time: libnccl.so.2 (or the file
// EMAE_NCCL_LIBRARY names) is dlopen()ed the first time a job asks for it, so the addon builds and
// loads without NCCL, and NCCL can come from a CUDA or PyTorch installation (its pip wheel
// nvidia-nccl-cu12 puts libnccl.so.2 in site-packages/nvidia/nccl/lib). The layering is
// Horovod's: rank 0 makes the unique id, MPI broadcasts it, every rank calls ncclCommInitRank;
// an error aborts the communicator (ncclCommAbort) and becomes a C++ exception.
//
// Compiled only with the CUDA backend (EMAE_WITH_CUDA); otherwise every entry reports that.
// All calls come from the compute thread.
#pragma once
#include <cstddef>
#include <functional>
#include <string>

namespace emae::dist::nccl {

// CUDA devices the runtime sees (0 without the CUDA backend or without a driver).
int device_count();

// Loads libnccl once; returns '' when usable (version set, e.g. "2.21.5"), else why not.
std::string load(std::string* version);

// Collective over every rank: each rank selects `device` (unless `refused` says why this rank
// cannot take part) and rank 0 draws the unique id; then `least` (an MPI all-reduce, minimum)
// finds the first rank where that failed, if any, and `broadcast` (MPI, bytes in place from
// `root`) hands every rank either rank 0's id or that rank's error, so that a failure on one rank
// (ncclGetUniqueId on rank 0, cudaSetDevice or `refused` anywhere) throws on every rank, naming
// it, instead of leaving the others waiting in a collective. Then ncclCommInitRank on `device`.
// Throws on failure.
void init(int rank, int size, int device, const std::string& refused, const std::function<int(int)>& least,
          const std::function<void(void*, size_t, int)>& broadcast);
bool ready();

// Sum of `count` floats in place on the device, enqueued on `stream` (a cudaStream_t) and waited
// for; an asynchronous NCCL error (a peer gone) aborts the communicator and throws.
void allreduce_sum(float* device_data, size_t count, void* stream);

// Frees the communicator (ncclCommDestroy); safe to call when none.
void destroy();

}  // namespace emae::dist::nccl
