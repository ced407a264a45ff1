// Reconstruction and self-consistency losses in one fused pass over the predictions (stored fp32
// or bf16: T; math in fp32, sums in double), as in native/cpu/ops.cc loss_forward_backward:
//   pred (S, 1+N, P) with row 0 of each part the dropped cls row, target (B, N, P)
//   recon = Σ_{b,k, n masked in k} mean_p (ŷ − t)² / (B·K·(N−V))
//   consistency = Σ_{(b,n,i≠j) both masked} mean_p d(ŷ_i − sg(ŷ_j)) / |S|
//   dpred = ∂(recon + λ·consistency)/∂pred with the stop-gradient (cls rows 0), stored as T
// |S| has a closed form: a patch visible in one of the K parts is masked in K−1, the others in K,
// and exactly K·V patches per image are visible somewhere.
// One warp per (b, n); per-item sums go to scratch and are reduced in a fixed order (the bodies in
// loss_detail are host-callable: cuda/dev/elementwise_bf16_emulate.cu runs them). The values
// come back to the host (loss_forward_backward, a host sync) or go into device memory for the
// optimizer to read there (loss_forward_backward_into).
#pragma once
#include "core/backend.h"
#include "core/elementwise.h"
#include "cuda/common.cuh"

namespace emae::cuda {

struct LossTraits {
  static constexpr int kWarpsPerBlock = 8;
  static constexpr int kReduceThreads = 1024;
  static_assert((kReduceThreads & (kReduceThreads - 1)) == 0, "the final tree reduction needs a power of two");
};

namespace loss_detail {

// The item body runs one warp per (b, n); a Warp policy gives the value of lane ^ offset
// (__shfl_xor_sync on the GPU), so the CPU emulation (cuda/dev/elementwise_bf16_emulate.cu) runs
// this very code.
struct DeviceWarp {
  __device__ __forceinline__ double shfl_xor(double v, int offset) const {
    return __shfl_xor_sync(0xffffffffu, v, offset);
  }
};

// This lane's part of item (b, n) = (item / N, item % N): dpred of its K rows (stored as T) and,
// from lane 0, item_sums[item] = (Σ (ŷ − t)², Σ d) over the rows where n is masked; nothing for an
// item past B·N (checked here, where the kernel checked it, so the fp32 code is as it was).
#pragma nv_exec_check_disable
template <class T, class Warp>
__host__ __device__ __forceinline__ void item(T* __restrict__ dpred, double* __restrict__ item_sums,
                                              const T* __restrict__ pred, const float* __restrict__ target,
                                              const int32_t* __restrict__ position_of, const PartGeometry& g,
                                              float rec_scale, float con_scale, bool l1, unsigned block,
                                              unsigned thread, const Warp& warp) {
  const int item = block * LossTraits::kWarpsPerBlock + thread / 32;
  const int lane = thread % 32;
  const int K = g.parts, V = g.visible, N = g.num_patches;
  const int P = g.patch * g.patch * g.channels;
  if (item >= g.batch * N) return;
  const int b = item / N, n = item % N;
  const int pos = position_of[item];
  const int vis = pos < K * V ? pos / V : -1;  // the part in which n is visible, −1 if none
  const float* t = target + (size_t)item * P;
  const size_t part_stride = (size_t)(1 + N) * P;
  const size_t row0 = (size_t)b * K * part_stride + (size_t)(1 + n) * P;
  double rec = 0.0, con = 0.0;
  for (int i = 0; i < K; ++i) {
    T* gi = dpred + row0 + i * part_stride;
    if (i == vis) {
      for (int q = lane; q < P; q += 32) gi[q] = store_as<T>(0.f);
      continue;
    }
    const T* yi = pred + row0 + i * part_stride;
    for (int q = lane; q < P; q += 32) {
      const float y = load_f32(yi[q]);
      const float diff = y - t[q];
      rec += (double)(diff * diff);
      float grad = rec_scale * diff;
      for (int j = 0; j < K; ++j) {
        if (j == i || j == vis) continue;
        const float dij = y - load_f32(pred[row0 + j * part_stride + q]);
        con += (double)consistency_dist(dij, l1);
        grad += con_scale * consistency_dist_grad(dij, l1);
      }
      gi[q] = store_as<T>(grad);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    rec += warp.shfl_xor(rec, offset);
    con += warp.shfl_xor(con, offset);
  }
  if (lane == 0) {
    item_sums[2 * (size_t)item] = rec;
    item_sums[2 * (size_t)item + 1] = con;
  }
}

// Element idx of the S·P cls-row elements of dpred (S, 1+N, P): zero
template <class T>
__host__ __device__ __forceinline__ void zero_cls_row_element(T* __restrict__ dpred, int N, int P, long long idx) {
  dpred[(idx / P) * (size_t)(1 + N) * P + idx % P] = store_as<T>(0.f);
}

}  // namespace loss_detail

template <class T>
__global__ void loss_items_kernel(T* __restrict__ dpred, double* __restrict__ item_sums,
                                  const T* __restrict__ pred, const float* __restrict__ target,
                                  const int32_t* __restrict__ position_of, PartGeometry g, float rec_scale,
                                  float con_scale, bool l1) {
  loss_detail::item(dpred, item_sums, pred, target, position_of, g, rec_scale, con_scale, l1, blockIdx.x, threadIdx.x,
                    loss_detail::DeviceWarp{});
}

template <class T>
__global__ void zero_cls_rows_kernel(T* __restrict__ dpred, int S, int N, int P) {
  const long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  if (idx >= (long long)S * P) return;
  loss_detail::zero_cls_row_element(dpred, N, P, idx);
}

// out[0..1] = Σ items (recon, consistency); one block, fixed assignment and tree: deterministic
static __global__ void loss_reduce_kernel(double* __restrict__ out, const double* __restrict__ item_sums, int items) {
  __shared__ double sh[2][LossTraits::kReduceThreads];
  double rec = 0.0, con = 0.0;
  for (int i = threadIdx.x; i < items; i += blockDim.x) {
    rec += item_sums[2 * (size_t)i];
    con += item_sums[2 * (size_t)i + 1];
  }
  sh[0][threadIdx.x] = rec;
  sh[1][threadIdx.x] = con;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      sh[0][threadIdx.x] += sh[0][threadIdx.x + stride];
      sh[1][threadIdx.x] += sh[1][threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    out[0] = sh[0][0];
    out[1] = sh[1][0];
  }
}

inline size_t loss_scratch_doubles(const PartGeometry& g) { return 2 * (size_t)g.batch * g.num_patches + 2; }

// The loss values from the two sums, as the CPU computes them (native/cpu/ops.cc); on the device
// without a fused multiply-add, so the device's values are the host's bit for bit.
__host__ __device__ inline LossValues loss_values(double rec_sum, double con_sum, double rec_denominator,
                                                  double pair_denominator, float lambda) {
  LossValues out;
  out.recon = rec_sum / rec_denominator;
  out.consistency = pair_denominator > 0 ? con_sum / pair_denominator : 0.0;
#if defined(__CUDA_ARCH__)
  out.loss = __dadd_rn(out.recon, __dmul_rn((double)lambda, out.consistency));
#else
  out.loss = out.recon + (double)lambda * out.consistency;
#endif
  return out;
}

// *out = loss_values of totals (recon, consistency): one thread, the step's losses written
// where the optimizer reads them (EMAE_CUDA_STEP_SYNC=once)
static __global__ void loss_values_kernel(LossValues* __restrict__ out, const double* __restrict__ totals,
                                          double rec_denominator, double pair_denominator, float lambda) {
  *out = loss_values(totals[0], totals[1], rec_denominator, pair_denominator, lambda);
}

// The denominators of the two means: B·K·(N−V)·P and |S|·P (0 when no pair exists)
struct LossDenominators {
  double rec, pairs;
};

// The denominators and the gradient scales of a step: dpred = rec_scale·(ŷ − t) + con_scale·Σ d′
struct LossScales {
  LossDenominators den;
  float rec_scale, con_scale;
};
inline LossScales loss_scales(const PartGeometry& g, float lambda) {
  const int B = g.batch, K = g.parts, V = g.visible, N = g.num_patches;
  const int P = g.patch * g.patch * g.channels;
  const double rec_count = (double)B * K * (N - V);
  const double pairs = (double)B * ((double)K * V * (K - 1) * (K - 2) + (double)(N - K * V) * K * (K - 1));
  LossScales s;
  s.den.rec = rec_count * P;
  s.den.pairs = pairs > 0 ? pairs * P : 0.0;
  s.rec_scale = (float)(2.0 / (rec_count * P));
  s.con_scale = pairs > 0 ? (float)(lambda / (pairs * P)) : 0.f;
  return s;
}

// Enqueues the fused pass: dpred, and the two sums (recon, consistency) into scratch's last two
// doubles, returned. scratch: loss_scratch_doubles(g).
template <class T>
inline const double* loss_sums(LossDenominators& den, T* dpred, const T* pred, const float* target,
                               const int32_t* position_of, const PartGeometry& g, float lambda, bool l1,
                               double* scratch, cudaStream_t stream) {
  const int B = g.batch, K = g.parts, N = g.num_patches;
  const int P = g.patch * g.patch * g.channels;
  const LossScales scales = loss_scales(g, lambda);
  den = scales.den;
  const float rec_scale = scales.rec_scale, con_scale = scales.con_scale;
  const int items = B * N;
  double* item_sums = scratch;
  double* totals = scratch + 2 * (size_t)items;
  loss_items_kernel<<<ceil_div(items, LossTraits::kWarpsPerBlock), 32 * LossTraits::kWarpsPerBlock, 0, stream>>>(
      dpred, item_sums, pred, target, position_of, g, rec_scale, con_scale, l1);
  EMAE_CHECK_LAUNCH("loss_items_kernel");
  zero_cls_rows_kernel<<<ceil_div((long long)B * K * P, 256), 256, 0, stream>>>(dpred, B * K, N, P);
  EMAE_CHECK_LAUNCH("zero_cls_rows_kernel");
  loss_reduce_kernel<<<1, LossTraits::kReduceThreads, 0, stream>>>(totals, item_sums, items);
  EMAE_CHECK_LAUNCH("loss_reduce_kernel");
  return totals;
}

// Returns the loss values: waits for the device (EMAE_CUDA_STEP_SYNC=host, the verified flow).
template <class T>
inline LossValues loss_forward_backward(T* dpred, const T* pred, const float* target,
                                        const int32_t* position_of, const PartGeometry& g, float lambda, bool l1,
                                        double* scratch, cudaStream_t stream) {
  LossDenominators den;
  const double* totals = loss_sums(den, dpred, pred, target, position_of, g, lambda, l1, scratch, stream);
  double host[2];
  EMAE_CUDA_CHECK(cudaMemcpyAsync(host, totals, sizeof(host), cudaMemcpyDeviceToHost, stream));
  EMAE_CUDA_CHECK(cudaStreamSynchronize(stream));
  return loss_values(host[0], host[1], den.rec, den.pairs, lambda);
}

// The loss values into *out (device memory) without waiting (EMAE_CUDA_STEP_SYNC=once).
template <class T>
inline void loss_forward_backward_into(LossValues* out, T* dpred, const T* pred, const float* target,
                                       const int32_t* position_of, const PartGeometry& g, float lambda, bool l1,
                                       double* scratch, cudaStream_t stream) {
  LossDenominators den;
  const double* totals = loss_sums(den, dpred, pred, target, position_of, g, lambda, l1, scratch, stream);
  loss_values_kernel<<<1, 1, 0, stream>>>(out, totals, den.rec, den.pairs, lambda);
  EMAE_CHECK_LAUNCH("loss_values_kernel");
}

}  // namespace emae::cuda
