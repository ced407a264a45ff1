// Shared CUDA plumbing: error checks that throw (never exit: we live inside the user's Node
// process), launch checks naming the kernel, and small device helpers.
// Invariants for every kernel file in cuda/:
//   - all memory is fp32 (parameters, activations, gradients) unless a name or a storage type says
//     bf16: kernels templated on T ∈ {float, bf16} load T as fp32, compute in fp32 and store T
//     rounded to nearest even (load_f32, store_as below); the float instantiations are the fp32 code;
//   - forward outputs are assigned, parameter gradients accumulate (+=), as in native/core/backend.h;
//   - every launcher takes the stream, checks its arguments and calls EMAE_CHECK_LAUNCH after the launch;
//   - kernels in these headers are static (or templates), so several translation units may include them.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace emae::cuda {

// A CUDA failure, naming the operation (becomes a JS Error).
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err != cudaSuccess) {
    throw CudaError(std::string(what) + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ") at " +
                    file + ":" + std::to_string(line));
  }
}

}  // namespace emae::cuda

#define EMAE_CUDA_CHECK(call) ::emae::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: configuration errors show up in cudaGetLastError.
#define EMAE_CHECK_LAUNCH(kernel_name) ::emae::cuda::check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)

namespace emae::cuda {

inline int ceil_div(long long a, long long b) { return (int)((a + b - 1) / b); }

// Activation storage: an element of T read as fp32, an fp32 value stored as T (bf16: rounded to
// nearest even). Host-callable for the CPU emulations.
__host__ __device__ __forceinline__ float load_f32(float v) { return v; }
__host__ __device__ __forceinline__ float load_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> __host__ __device__ __forceinline__ T store_as(float v);
template <> __host__ __device__ __forceinline__ float store_as<float>(float v) { return v; }
template <> __host__ __device__ __forceinline__ __nv_bfloat16 store_as<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Deterministic column sums in two stages: partial[chunk][c] = Σ_{rows in chunk} src[r·row_stride + c],
// then dst[c] += Σ_chunks partial[chunk][c] in chunk order.
constexpr int kColumnSumRowChunk = 256;

// Src: float, or bf16 (summed widened to fp32, in the same order).
template <class Src>
static __global__ void column_sum_partial_kernel(float* __restrict__ partial, const Src* __restrict__ src, int rows, int C,
                                          long long row_stride) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const int r0 = blockIdx.y * kColumnSumRowChunk, r1 = min(rows, r0 + kColumnSumRowChunk);
  float acc = 0.f;
  for (int r = r0; r < r1; ++r) acc += load_f32(src[(size_t)r * row_stride + c]);
  partial[(size_t)blockIdx.y * C + c] = acc;
}

static __global__ void reduce_chunks_kernel(float* __restrict__ dst, const float* __restrict__ partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float acc = 0.f;
  for (int k = 0; k < chunks; ++k) acc += partial[(size_t)k * C + c];
  dst[c] += acc;
}

inline size_t column_sum_scratch_floats(int rows, int C) { return (size_t)ceil_div(rows, kColumnSumRowChunk) * C; }

// dst (C) += Σ_r src[r·row_stride + c]; scratch: column_sum_scratch_floats(rows, C) floats.
// Src: float, or bf16 (the sums of an fp32 array holding the same values, bit for bit).
template <class Src>
inline void column_sum_accumulate(float* dst, const Src* src, int rows, int C, long long row_stride, float* scratch,
                                  cudaStream_t stream) {
  if (rows <= 0 || C <= 0) return;
  const int chunks = ceil_div(rows, kColumnSumRowChunk);
  column_sum_partial_kernel<Src><<<dim3(ceil_div(C, 128), chunks), 128, 0, stream>>>(scratch, src, rows, C, row_stride);
  EMAE_CHECK_LAUNCH("column_sum_partial_kernel");
  reduce_chunks_kernel<<<ceil_div(C, 128), 128, 0, stream>>>(dst, scratch, chunks, C);
  EMAE_CHECK_LAUNCH("reduce_chunks_kernel");
}

}  // namespace emae::cuda
