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

// Collective over every rank: rank 0 draws the unique id, `broadcast` (MPI) hands it to the
// others (bytes in place, root 0), then ncclCommInitRank on `device`. Throws on failure.
void init(int rank, int size, int device, const std::function<void(void*, size_t)>& broadcast);
bool ready();

// Sum of `count` floats in place on the device, enqueued on `stream` (a cudaStream_t) and waited
// for; an asynchronous NCCL error (a peer gone) aborts the communicator and throws.
void allreduce_sum(float* device_data, size_t count, void* stream);

// Frees the communicator (ncclCommDestroy); safe to call when none.
void destroy();

}  // namespace emae::dist::nccl
