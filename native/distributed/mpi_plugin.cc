// emae_mpi.so: the MPI calls emae makes, behind the C ABI of mpi_plugin.h. Built only when CMake's
// FindMPI finds an MPI (compiled against its mpi.h, linked to its libmpi); loaded by the addon
// with dlopen() when a job of more than one rank starts (native/distributed/dist.cc).
//
// Open MPI loads its transports as plugins of its own (mca_*.so) that resolve symbols of libmpi
// and its siblings in the global namespace. A library pulled in by dlopen(RTLD_LOCAL) — Node
// loads addons that way — is not there, so init() first re-opens our libmpi with RTLD_GLOBAL
// (found with dladdr, whatever its name or path) before MPI_Init_thread.
//
// Thread use: every call but abort() comes from the addon's one compute thread
// (native/compute_thread.cc), so MPI_THREAD_SERIALIZED is enough; abort() may come from the JS
// thread while the compute thread waits in a collective, which MPI_Abort tolerates in practice
// (its job is to end the processes).
#include <dlfcn.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "distributed/mpi_plugin.h"

namespace {

MPI_Comm g_local = MPI_COMM_NULL;
// Why init() finalized MPI, when it did: MPI cannot start again in this process, and a later
// init() says so with this reason instead of calling MPI_Init_thread after MPI_Finalize.
std::string g_init_failure;

void set_error(char* err, size_t errlen, const std::string& text) {
  if (!err || errlen == 0) return;
  std::snprintf(err, errlen, "%s", text.c_str());
}

// An MPI error code as text, prefixed with the call that failed.
int fail(int code, const char* what, char* err, size_t errlen) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) std::snprintf(text, sizeof text, "MPI error %d", code);
  set_error(err, errlen, std::string(what) + " failed: " + text);
  return 1;
}

int check_initialized(char* err, size_t errlen) {
  int done = 0, finalized = 0;
  MPI_Initialized(&done);
  MPI_Finalized(&finalized);
  if (!done || finalized) {
    set_error(err, errlen, finalized ? "MPI has been finalized" : "MPI is not initialized");
    return 1;
  }
  return 0;
}

std::string library_version() {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(version, &len);
  const std::string text(version, std::strlen(version));
  return text.substr(0, text.find_first_of("\n,"));
}

int plugin_init(EmaeMpiInit* out, char* err, size_t errlen) {
  int done = 0, finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) {
    set_error(err, errlen,
              (g_init_failure.empty() ? std::string("MPI was finalized in this process")
                                      : "an earlier initialization failed (" + g_init_failure + ") and finalized MPI") +
                  "; MPI cannot be initialized again after MPI_Finalize: start a new process");
    return 1;
  }
  MPI_Initialized(&done);
  if (!done) {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) && info.dli_fname)
      dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);  // promote libmpi (see the top)
    int provided = 0;
    const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Init_thread", err, errlen);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    out->thread_level = provided == MPI_THREAD_SINGLE ? 0 : provided == MPI_THREAD_FUNNELED ? 1
                      : provided == MPI_THREAD_SERIALIZED ? 2 : 3;
    if (provided < MPI_THREAD_FUNNELED) {
      // Not left half started: every rank gets the same level from the same library, so every
      // rank finalizes here (MPI_Finalize is collective) and reports the same error.
      g_init_failure = "the MPI library (" + library_version() +
                       ") provides only MPI_THREAD_SINGLE; emae needs MPI_THREAD_FUNNELED or more (use an MPI built "
                       "with thread support)";
      const int frc = MPI_Finalize();
      set_error(err, errlen,
                g_init_failure + (frc == MPI_SUCCESS ? std::string("; MPI was finalized")
                                                     : "; MPI_Finalize then failed too") +
                    ", and cannot be initialized again in this process");
      return 1;
    }
  }
  int rc = MPI_Comm_rank(MPI_COMM_WORLD, &out->rank);
  if (rc != MPI_SUCCESS) return fail(rc, "MPI_Comm_rank", err, errlen);
  rc = MPI_Comm_size(MPI_COMM_WORLD, &out->size);
  if (rc != MPI_SUCCESS) return fail(rc, "MPI_Comm_size", err, errlen);
  if (g_local == MPI_COMM_NULL) {
    rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, out->rank, MPI_INFO_NULL, &g_local);
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Comm_split_type", err, errlen);
  }
  MPI_Comm_rank(g_local, &out->local_rank);
  MPI_Comm_size(g_local, &out->local_size);
  std::snprintf(out->library, sizeof out->library, "%s", library_version().c_str());  // cut to fit
  return 0;
}

int plugin_allreduce(void* buf, size_t count, int type, int op, char* err, size_t errlen) {
  if (check_initialized(err, errlen)) return 1;
  MPI_Datatype dt;
  size_t elem;
  switch (type) {
    case EMAE_MPI_FLOAT32: dt = MPI_FLOAT; elem = 4; break;
    case EMAE_MPI_FLOAT64: dt = MPI_DOUBLE; elem = 8; break;
    default: set_error(err, errlen, "allreduce: unknown datatype " + std::to_string(type)); return 1;
  }
  MPI_Op mop;
  switch (op) {
    case EMAE_MPI_SUM: mop = MPI_SUM; break;
    case EMAE_MPI_MAX: mop = MPI_MAX; break;
    case EMAE_MPI_MIN: mop = MPI_MIN; break;
    default: set_error(err, errlen, "allreduce: unknown op " + std::to_string(op)); return 1;
  }
  char* at = static_cast<char*>(buf);
  const size_t chunk = (size_t)1 << 30;  // elements per call: an int count, with room to spare
  for (size_t done = 0; done < count; done += chunk) {
    const int n = (int)std::min(chunk, count - done);
    const int rc = MPI_Allreduce(MPI_IN_PLACE, at + done * elem, n, dt, mop, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Allreduce", err, errlen);
  }
  return 0;
}

int plugin_broadcast(void* buf, size_t bytes, int root, char* err, size_t errlen) {
  if (check_initialized(err, errlen)) return 1;
  char* at = static_cast<char*>(buf);
  const size_t chunk = (size_t)1 << 30;
  for (size_t done = 0; done < bytes; done += chunk) {
    const int n = (int)std::min(chunk, bytes - done);
    const int rc = MPI_Bcast(at + done, n, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Bcast", err, errlen);
  }
  return 0;
}

int plugin_barrier(char* err, size_t errlen) {
  if (check_initialized(err, errlen)) return 1;
  const int rc = MPI_Barrier(MPI_COMM_WORLD);
  return rc == MPI_SUCCESS ? 0 : fail(rc, "MPI_Barrier", err, errlen);
}

void plugin_abort(int code) {
  int done = 0, finalized = 0;
  MPI_Initialized(&done);
  MPI_Finalized(&finalized);
  if (done && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI not running (or MPI_Abort returned): end this process anyway
}

int plugin_finalize(char* err, size_t errlen) {
  int done = 0, finalized = 0;
  MPI_Initialized(&done);
  MPI_Finalized(&finalized);
  if (!done || finalized) return 0;
  if (g_local != MPI_COMM_NULL) MPI_Comm_free(&g_local);
  const int rc = MPI_Finalize();
  return rc == MPI_SUCCESS ? 0 : fail(rc, "MPI_Finalize", err, errlen);
}

const EmaeMpiApi kApi = {
    EMAE_MPI_ABI_VERSION, plugin_init, plugin_allreduce, plugin_broadcast, plugin_barrier, plugin_abort, plugin_finalize,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const EmaeMpiApi* emae_mpi_api(void) { return &kApi; }
