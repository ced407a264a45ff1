// The C ABI between the addon and its MPI plugin (emae_mpi.so, native/distributed/mpi_plugin.cc).
//
// Why a plugin: the addon itself never links libmpi, so it loads on machines without MPI and a
// single-process run needs none. The plugin is built only when CMake's FindMPI finds MPI; it is
// compiled against that MPI's mpi.h (datatypes and ops are implementation-specific handles) and
// linked to its libmpi. The addon dlopen()s it when a job of more than one rank starts.
//
// Every function returns 0 on success, else writes a message into err (errlen bytes, always
// NUL-terminated) and returns non-zero. Counts are elements; buffers are host memory.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {

enum EmaeMpiType { EMAE_MPI_FLOAT32 = 0, EMAE_MPI_FLOAT64 = 1 };
enum EmaeMpiOp { EMAE_MPI_SUM = 0, EMAE_MPI_MAX = 1, EMAE_MPI_MIN = 2 };

struct EmaeMpiInit {
  int rank, size;              // in MPI_COMM_WORLD
  int local_rank, local_size;  // in the node's shared-memory communicator (MPI_COMM_TYPE_SHARED)
  int thread_level;            // provided: 0 single, 1 funneled, 2 serialized, 3 multiple
  char library[256];           // MPI_Get_library_version, first line
};

struct EmaeMpiApi {
  int abi_version;  // EMAE_MPI_ABI_VERSION
  // MPI_Init_thread(MPI_THREAD_SERIALIZED) once; errors return instead of aborting (MPI_ERRORS_RETURN).
  int (*init)(EmaeMpiInit* out, char* err, size_t errlen);
  // In place over `count` elements (any size: split into chunks that fit an int count).
  int (*allreduce)(void* buf, size_t count, int type, int op, char* err, size_t errlen);
  int (*broadcast)(void* buf, size_t bytes, int root, char* err, size_t errlen);
  int (*barrier)(char* err, size_t errlen);
  // MPI_Abort(MPI_COMM_WORLD, code): the launcher ends every rank. Does not return.
  void (*abort)(int code);
  int (*finalize)(char* err, size_t errlen);
};

#define EMAE_MPI_ABI_VERSION 1
// The one symbol the plugin exports.
const EmaeMpiApi* emae_mpi_api(void);
typedef const EmaeMpiApi* (*EmaeMpiApiFn)(void);
}
