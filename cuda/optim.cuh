// GELU (fp32 math on float or bf16 storage) and the optimizer-side kernels: AdamW over all
// trainable segments in one launch (optionally writing the GEMMs' bf16 copy of the parameters), the
// global gradient norm (deterministic two-stage reduction, into device memory) and gradient
// scaling. Segments (offset, size, decay, lr multiplier) live in device memory (SegmentTable
// below); blockIdx.y picks the segment and the x blocks stride over it.
// The step's decision (core/step_status.h: refuse a non-finite loss or norm, clip factor) is taken
// on the host from the downloaded status with EMAE_CUDA_STEP_SYNC=host (scale_kernel, then
// adamw_kernel), or on the device with =once: step_decision_kernel writes it to device memory
// once and every block of adamw_decided_kernel reads that one value, so all blocks agree.
#pragma once
#include <algorithm>
#include <vector>

#include "core/backend.h"
#include "core/elementwise.h"
#include "core/step_status.h"
#include "cuda/common.cuh"

namespace emae::cuda {

struct OptimTraits {
  static constexpr int kThreads = 256;
  static constexpr int kBlocksPerSegment = 64;  // x-blocks striding over one segment
};

// Element i of GELU forward and backward (T: float or bf16 storage; fp32 math). Host-callable for
// the CPU emulation (cuda/dev/elementwise_bf16_emulate.cu).
template <class T>
__host__ __device__ __forceinline__ void gelu_forward_element(T* __restrict__ out, const T* __restrict__ inp, size_t i) {
  out[i] = store_as<T>(gelu(load_f32(inp[i])));
}
template <class T>
__host__ __device__ __forceinline__ void gelu_backward_element(T* dinp, const T* __restrict__ inp, const T* dout,
                                                               size_t i) {
  dinp[i] = store_as<T>(gelu_grad(load_f32(inp[i])) * load_f32(dout[i]));  // dinp may alias dout: each element read then written by one thread
}

template <class T>
static __global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ inp, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    gelu_forward_element(out, inp, i);
}

template <class T>
static __global__ void gelu_backward_kernel(T* dinp, const T* __restrict__ inp, const T* dout, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    gelu_backward_element(dinp, inp, dout, i);
}

// dst[i] = src[i] rounded to bf16 (a flat copy of the parameters for the bf16 GEMMs; gemm_bf16.cuh's
// convert_to_bf16 pads rows to 8 elements, so it cannot write a flat buffer of any length)
__host__ __device__ __forceinline__ void convert_to_bf16_flat_element(__nv_bfloat16* __restrict__ dst,
                                                                      const float* __restrict__ src, size_t i) {
  dst[i] = __float2bfloat16_rn(src[i]);
}
static __global__ void convert_to_bf16_flat_kernel(__nv_bfloat16* __restrict__ dst, const float* __restrict__ src,
                                                   size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    convert_to_bf16_flat_element(dst, src, i);
}

struct DeviceSegment {
  unsigned long long offset, size;
  int decay;
  double lr_scale;  // the segment's lr is segment_lr(s.lr, lr_scale), as on the CPU
};

// A kernel's place in its grid, so that the AdamW bodies below run on the host too (the CPU
// emulation loops over every block and thread); DeviceGrid reads the built-in indices.
struct DeviceGrid {
  __device__ __forceinline__ unsigned block_x() const { return blockIdx.x; }
  __device__ __forceinline__ unsigned block_y() const { return blockIdx.y; }
  __device__ __forceinline__ unsigned thread_x() const { return threadIdx.x; }
  __device__ __forceinline__ unsigned grid_x() const { return gridDim.x; }
  __device__ __forceinline__ unsigned block_dim_x() const { return blockDim.x; }
};

// This block's stride of AdamW over segment block_y; kClip: each gradient is first multiplied
// by factor and stored back (the value scale_kernel would leave: one rounding, as there). G: float,
// or const float without kClip. kBf16Copy: params_bf16[k] = the new params[k] rounded to bf16 (the
// GEMMs' working copy, written by the update itself: no extra pass over the parameters).
#pragma nv_exec_check_disable
template <bool kClip, bool kBf16Copy, typename G, class Grid>
__host__ __device__ __forceinline__ void adamw_segment_stride(float* __restrict__ params, G* __restrict__ grads,
                                                              float* __restrict__ m, float* __restrict__ v,
                                                              __nv_bfloat16* __restrict__ params_bf16,
                                                              const DeviceSegment* __restrict__ segments,
                                                              const AdamWScalars& s, float factor, const Grid& grid) {
  const DeviceSegment seg = segments[grid.block_y()];
  AdamWScalars sk = s;
  sk.lr = segment_lr(s.lr, seg.lr_scale);
  for (unsigned long long i = grid.block_x() * (unsigned long long)grid.block_dim_x() + grid.thread_x(); i < seg.size;
       i += (unsigned long long)grid.grid_x() * grid.block_dim_x()) {
    const unsigned long long k = seg.offset + i;
    float g = grads[k];
    if constexpr (kClip) {
      g *= factor;
      grads[k] = g;
    }
    adamw_update(params[k], m[k], v[k], g, sk, seg.decay != 0);
    if constexpr (kBf16Copy) params_bf16[k] = __float2bfloat16_rn(params[k]);
  }
}

#pragma nv_exec_check_disable
template <bool kBf16Copy, class Grid>
__host__ __device__ __forceinline__ void adamw_body(float* __restrict__ params, const float* __restrict__ grads,
                                                    float* __restrict__ m, float* __restrict__ v,
                                                    __nv_bfloat16* __restrict__ params_bf16,
                                                    const DeviceSegment* __restrict__ segments, const AdamWScalars& s,
                                                    const Grid& grid) {
  adamw_segment_stride<false, kBf16Copy>(params, grads, m, v, params_bf16, segments, s, 1.f, grid);
}

// adamw_body under a decision taken on the device: a refused step returns at once (every block
// reads the same decision); clipping multiplies each gradient by the factor and stores it back, the
// value scale_kernel would have left for adamw_kernel to read (one rounding, as there), in one pass.
#pragma nv_exec_check_disable
template <bool kBf16Copy, class Grid>
__host__ __device__ __forceinline__ void adamw_decided_body(float* __restrict__ params, float* __restrict__ grads,
                                                            float* __restrict__ m, float* __restrict__ v,
                                                            __nv_bfloat16* __restrict__ params_bf16,
                                                            const DeviceSegment* __restrict__ segments,
                                                            const AdamWScalars& s,
                                                            const StepDecision* __restrict__ decision,
                                                            const Grid& grid) {
  const StepDecision d = *decision;
  if (!d.update) return;
  if (d.clip)
    adamw_segment_stride<true, kBf16Copy>(params, grads, m, v, params_bf16, segments, s, d.factor, grid);
  else
    adamw_segment_stride<false, kBf16Copy>(params, grads, m, v, params_bf16, segments, s, 1.f, grid);
}

template <bool kBf16Copy>
static __global__ void adamw_kernel(float* __restrict__ params, const float* __restrict__ grads, float* __restrict__ m,
                                    float* __restrict__ v, __nv_bfloat16* __restrict__ params_bf16,
                                    const DeviceSegment* __restrict__ segments, AdamWScalars s) {
  adamw_body<kBf16Copy>(params, grads, m, v, params_bf16, segments, s, DeviceGrid{});
}

// *decision = decide_step(*status, clip_grad, check_loss), by one thread
static __global__ void step_decision_kernel(StepDecision* __restrict__ decision, const StepStatus* __restrict__ status,
                                            float clip_grad, bool check_loss) {
  *decision = decide_step(*status, clip_grad, check_loss);
}

template <bool kBf16Copy>
static __global__ void adamw_decided_kernel(float* __restrict__ params, float* __restrict__ grads, float* __restrict__ m,
                                            float* __restrict__ v, __nv_bfloat16* __restrict__ params_bf16,
                                            const DeviceSegment* __restrict__ segments, AdamWScalars s,
                                            const StepDecision* __restrict__ decision) {
  adamw_decided_body<kBf16Copy>(params, grads, m, v, params_bf16, segments, s, decision, DeviceGrid{});
}

static __global__ void scale_kernel(float* __restrict__ data, const DeviceSegment* __restrict__ segments, float factor) {
  const DeviceSegment seg = segments[blockIdx.y];
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < seg.size;
       i += (unsigned long long)gridDim.x * blockDim.x)
    data[seg.offset + i] *= factor;
}

// partial[segment][x-block] = Σ g² over that block's stride (double)
static __global__ void grad_norm_partial_kernel(double* __restrict__ partial, const float* __restrict__ grads,
                                         const DeviceSegment* __restrict__ segments) {
  __shared__ double warp_sums[OptimTraits::kThreads / 32];
  const DeviceSegment seg = segments[blockIdx.y];
  double acc = 0.0;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < seg.size;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    const double g = grads[seg.offset + i];
    acc += g * g;
  }
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < OptimTraits::kThreads / 32; ++w) total += warp_sums[w];
    partial[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = total;
  }
}

// one block sums the partials with a fixed assignment and tree: deterministic
static __global__ void sum_doubles_kernel(double* __restrict__ out, const double* __restrict__ partial, int n) {
  __shared__ double sh[1024];
  double acc = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  sh[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) sh[threadIdx.x] += sh[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = sh[0];
}

// T: float or bf16 (inp, out, dout and dinp share one storage type)
template <class T>
inline void gelu_forward(T* out, const T* inp, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = (int)std::min<size_t>((n + 255) / 256, 65535 * 8);
  gelu_forward_kernel<<<blocks, 256, 0, stream>>>(out, inp, n);
  EMAE_CHECK_LAUNCH("gelu_forward_kernel");
}

template <class T>
inline void gelu_backward(T* dinp, const T* inp, const T* dout, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = (int)std::min<size_t>((n + 255) / 256, 65535 * 8);
  gelu_backward_kernel<<<blocks, 256, 0, stream>>>(dinp, inp, dout, n);
  EMAE_CHECK_LAUNCH("gelu_backward_kernel");
}

// dst (n) = src (n) rounded to bf16 (nearest even)
inline void convert_to_bf16_flat(__nv_bfloat16* dst, const float* src, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const int blocks = (int)std::min<size_t>((n + 255) / 256, 65535 * 8);
  convert_to_bf16_flat_kernel<<<blocks, 256, 0, stream>>>(dst, src, n);
  EMAE_CHECK_LAUNCH("convert_to_bf16_flat_kernel");
}

// Device copies of the optimizer's segment lists. A list is uploaded (cudaMalloc, copy, stream
// synchronize) the first time it is passed and found again by content afterwards, so a steady
// step uploads nothing: each model passes one list to the norm, the clipping and AdamW (the
// fine-tuning classifier included: its layer-wise lr decay is the segments' lr_scale, not one
// AdamW call per layer group), and the data-parallel average scales the whole buffer as a
// second list. Up to kSlots lists are kept; a further one replaces the least recently used.
class SegmentTable {
 public:
  static constexpr int kSlots = 4;
  ~SegmentTable() {
    for (Slot& slot : slots_)
      if (slot.device) cudaFree(slot.device);
  }
  const DeviceSegment* get(const ParamSegment* segments, int count, cudaStream_t stream) {
    ++clock_;
    for (Slot& slot : slots_)
      if (slot.device && slot.same(segments, count)) {
        slot.used = clock_;
        return slot.device;
      }
    Slot* victim = nullptr;  // an empty slot, else the least recently used
    for (Slot& slot : slots_)
      if (!slot.device) {
        victim = &slot;
        break;
      } else if (!victim || slot.used < victim->used) {
        victim = &slot;
      }
    if (victim->device) {
      EMAE_CUDA_CHECK(cudaStreamSynchronize(stream));  // no kernel still reads the list it held
      EMAE_CUDA_CHECK(cudaFree(victim->device));
      victim->device = nullptr;
    }
    victim->host.assign(segments, segments + count);
    std::vector<DeviceSegment> table(count);
    for (int i = 0; i < count; ++i)
      table[i] = {(unsigned long long)segments[i].offset, (unsigned long long)segments[i].size, segments[i].decay ? 1 : 0,
                  segments[i].lr_scale};
    EMAE_CUDA_CHECK(cudaMalloc(&victim->device, sizeof(DeviceSegment) * std::max(count, 1)));
    EMAE_CUDA_CHECK(cudaMemcpyAsync(victim->device, table.data(), sizeof(DeviceSegment) * count, cudaMemcpyHostToDevice, stream));
    EMAE_CUDA_CHECK(cudaStreamSynchronize(stream));  // the host table is freed on return
    victim->used = clock_;
    return victim->device;
  }

 private:
  struct Slot {
    DeviceSegment* device = nullptr;
    std::vector<ParamSegment> host;
    unsigned long long used = 0;
    bool same(const ParamSegment* segments, int count) const {
      if ((size_t)count != host.size()) return false;
      for (int i = 0; i < count; ++i)
        if (host[i].offset != segments[i].offset || host[i].size != segments[i].size ||
            host[i].decay != segments[i].decay || host[i].lr_scale != segments[i].lr_scale)
          return false;
      return true;
    }
  };
  Slot slots_[kSlots];
  unsigned long long clock_ = 0;
};

// params_bf16: null, or the GEMMs' bf16 copy of params, written with the updated values
inline void adamw(float* params, const float* grads, float* m, float* v, __nv_bfloat16* params_bf16,
                  const DeviceSegment* segments, int count, const AdamWScalars& s, cudaStream_t stream) {
  if (count <= 0) return;
  dim3 grid(OptimTraits::kBlocksPerSegment, count);
  if (params_bf16)
    adamw_kernel<true><<<grid, OptimTraits::kThreads, 0, stream>>>(params, grads, m, v, params_bf16, segments, s);
  else
    adamw_kernel<false><<<grid, OptimTraits::kThreads, 0, stream>>>(params, grads, m, v, nullptr, segments, s);
  EMAE_CHECK_LAUNCH("adamw_kernel");
}

// AdamW as decide_step(*status, clip_grad, check_loss) says, decided on the device: the decision
// goes to *decision (device memory, one StepDecision) and the update kernel reads it there. No
// host synchronization. params_bf16 as in adamw (untouched when the step is refused).
inline void adamw_decided(float* params, float* grads, float* m, float* v, __nv_bfloat16* params_bf16,
                          const DeviceSegment* segments, int count, const AdamWScalars& s, const StepStatus* status,
                          float clip_grad, bool check_loss, StepDecision* decision, cudaStream_t stream) {
  if (count <= 0) return;
  step_decision_kernel<<<1, 1, 0, stream>>>(decision, status, clip_grad, check_loss);
  EMAE_CHECK_LAUNCH("step_decision_kernel");
  dim3 grid(OptimTraits::kBlocksPerSegment, count);
  if (params_bf16)
    adamw_decided_kernel<true><<<grid, OptimTraits::kThreads, 0, stream>>>(params, grads, m, v, params_bf16, segments, s,
                                                                           decision);
  else
    adamw_decided_kernel<false><<<grid, OptimTraits::kThreads, 0, stream>>>(params, grads, m, v, nullptr, segments, s,
                                                                            decision);
  EMAE_CHECK_LAUNCH("adamw_decided_kernel");
}

inline void scale(float* data, const DeviceSegment* segments, int count, float factor, cudaStream_t stream) {
  if (count <= 0) return;
  dim3 grid(OptimTraits::kBlocksPerSegment, count);
  scale_kernel<<<grid, OptimTraits::kThreads, 0, stream>>>(data, segments, factor);
  EMAE_CHECK_LAUNCH("scale_kernel");
}

// Σ g² into *result (device double); scratch holds count × kBlocksPerSegment doubles.
inline void grad_norm_squared(double* result, const float* grads, const DeviceSegment* segments, int count,
                              double* scratch, cudaStream_t stream) {
  if (count <= 0) {
    EMAE_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  dim3 grid(OptimTraits::kBlocksPerSegment, count);
  grad_norm_partial_kernel<<<grid, OptimTraits::kThreads, 0, stream>>>(scratch, grads, segments);
  EMAE_CHECK_LAUNCH("grad_norm_partial_kernel");
  sum_doubles_kernel<<<1, 1024, 0, stream>>>(result, scratch, count * OptimTraits::kBlocksPerSegment);
  EMAE_CHECK_LAUNCH("sum_doubles_kernel");
}

}  // namespace emae::cuda
