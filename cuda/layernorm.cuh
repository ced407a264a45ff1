// LayerNorm forward and backward, as in native/cpu/ops.cc: fp32 statistics and math; out and dout
// stored as float or bf16 (out rounded once, to nearest even), everything else fp32.
//   forward:  out (R, C) = (x − mean) · rstd · w + b; mean, rstd (R) saved
//   backward: dinp (R, C) += rstd · (dn − mean(dn) − x̂ · mean(dn · x̂)), dn = dout · w   [accumulates]
//             dw (C) += Σ_r dout · x̂;  db (C) += Σ_r dout                               [accumulate]
// One warp per row for the row-wise parts; the column sums run in fixed row chunks reduced in
// chunk order (deterministic), through a caller-provided scratch of
// layernorm_scratch_floats(R, C) floats.
// Backward with fp32 dout: three kernels (dinp rows; per chunk column partials, reading dout and
// inp again; the chunk reduction). With bf16 dout and C ≤ 32·kFusedMaxColumnsPerLane: one fused
// kernel whose blocks each own kFusedRowChunk rows, compute dinp per row as the row kernel does and
// keep each lane's column sums in registers, add the warps' sums in warp order in shared memory and
// write the block's partial; the same chunk reduction finishes dw, db (no atomics).
#pragma once
#include <type_traits>

#include "core/elementwise.h"
#include "cuda/common.cuh"

namespace emae::cuda {

struct LayerNormTraits {
  static constexpr int kWarpsPerBlock = 8;
  static constexpr int kRowChunk = 256;     // rows per partial column sum
  static constexpr int kColumnsPerBlock = 128;
  static_assert(kColumnsPerBlock % 32 == 0, "column blocks are whole warps");
  static constexpr int kFusedRowChunk = 128;            // rows per block of the fused backward
  static constexpr int kFusedMaxColumnsPerLane = 40;    // C ≤ 1280 (ViT-H); wider C: three kernels
};

namespace layernorm_detail {

// The row bodies run one warp per row; a Warp policy sums over the warp's 32 lanes (warp_sum on
// the GPU), so the CPU emulation (cuda/dev/elementwise_bf16_emulate.cu) runs this very code.
struct DeviceWarp {
  __device__ __forceinline__ float sum(float v) const { return warp_sum(v); }
};

// This lane's part of row `row`: out (R, C) stored as Out; mean, rstd fp32.
#pragma nv_exec_check_disable
template <class Out, class Warp>
__host__ __device__ __forceinline__ void forward_row(Out* __restrict__ out, float* __restrict__ mean,
                                                     float* __restrict__ rstd, const float* __restrict__ inp,
                                                     const float* __restrict__ w, const float* __restrict__ b, int row,
                                                     int lane, int C, float eps, const Warp& warp) {
  const float* x = inp + (size_t)row * C;
  float s = 0.f;
  for (int c = lane; c < C; c += 32) s += x[c];
  const float m = warp.sum(s) / C;
  float v = 0.f;
  for (int c = lane; c < C; c += 32) v += (x[c] - m) * (x[c] - m);
  const float r = layernorm_rstd(warp.sum(v) / C, eps);
  Out* o = out + (size_t)row * C;
  for (int c = lane; c < C; c += 32) o[c] = store_as<Out>((x[c] - m) * r * w[c] + b[c]);
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// This lane's part of row `row` of dinp (fp32, +=), from dout stored as DOut.
#pragma nv_exec_check_disable
template <class DOut, class Warp>
__host__ __device__ __forceinline__ void backward_input_row(float* __restrict__ dinp, const DOut* __restrict__ dout,
                                                            const float* __restrict__ inp, const float* __restrict__ w,
                                                            const float* __restrict__ mean,
                                                            const float* __restrict__ rstd, int row, int lane, int C,
                                                            const Warp& warp) {
  const float* x = inp + (size_t)row * C;
  const DOut* g = dout + (size_t)row * C;
  const float m = mean[row], r = rstd[row];
  float sum_dn = 0.f, sum_dn_xhat = 0.f;
  for (int c = lane; c < C; c += 32) {
    const float dn = load_f32(g[c]) * w[c];
    sum_dn += dn;
    sum_dn_xhat += dn * (x[c] - m) * r;
  }
  const float mean_dn = warp.sum(sum_dn) / C, mean_dn_xhat = warp.sum(sum_dn_xhat) / C;
  float* dx = dinp + (size_t)row * C;
  for (int c = lane; c < C; c += 32) dx[c] += r * (load_f32(g[c]) * w[c] - mean_dn - (x[c] - m) * r * mean_dn_xhat);
}

// Column c of row chunk `chunk`: partial (chunks, 2, C) = Σ dout·x̂ and Σ dout over the chunk's rows.
template <class DOut>
__host__ __device__ __forceinline__ void backward_params_partial_column(float* __restrict__ partial,
                                                                        const DOut* __restrict__ dout,
                                                                        const float* __restrict__ inp,
                                                                        const float* __restrict__ mean,
                                                                        const float* __restrict__ rstd, int c,
                                                                        int chunk, int R, int C) {
  const int r0 = chunk * LayerNormTraits::kRowChunk;
  const int r1 = R < r0 + LayerNormTraits::kRowChunk ? R : r0 + LayerNormTraits::kRowChunk;
  float dw = 0.f, db = 0.f;
  for (int r = r0; r < r1; ++r) {
    const float g = load_f32(dout[(size_t)r * C + c]);
    dw += g * (inp[(size_t)r * C + c] - mean[r]) * rstd[r];
    db += g;
  }
  partial[((size_t)chunk * 2) * C + c] = dw;
  partial[((size_t)chunk * 2 + 1) * C + c] = db;
}

// The fused backward's row: dinp exactly as backward_input_row (the same operations in the same
// order), and this lane's columns c = lane + 32·j (j < kCols, c < C) of Σ dout·x̂ and Σ dout added to
// acc_dw[j], acc_db[j]. kCols is a compile-time bound so the sums stay in registers.
#pragma nv_exec_check_disable
template <int kCols, class DOut, class Warp>
__host__ __device__ __forceinline__ void backward_fused_row(float* __restrict__ dinp, float (&acc_dw)[kCols],
                                                            float (&acc_db)[kCols], const DOut* __restrict__ dout,
                                                            const float* __restrict__ inp, const float* __restrict__ w,
                                                            const float* __restrict__ mean,
                                                            const float* __restrict__ rstd, int row, int lane, int C,
                                                            const Warp& warp) {
  const float* x = inp + (size_t)row * C;
  const DOut* g = dout + (size_t)row * C;
  const float m = mean[row], r = rstd[row];
  float sum_dn = 0.f, sum_dn_xhat = 0.f;
#pragma unroll
  for (int j = 0; j < kCols; ++j) {
    const int c = lane + 32 * j;
    if (c < C) {
      const float go = load_f32(g[c]);
      const float dn = go * w[c];
      sum_dn += dn;
      sum_dn_xhat += dn * (x[c] - m) * r;
      acc_dw[j] += go * (x[c] - m) * r;
      acc_db[j] += go;
    }
  }
  const float mean_dn = warp.sum(sum_dn) / C, mean_dn_xhat = warp.sum(sum_dn_xhat) / C;
  float* dx = dinp + (size_t)row * C;
  for (int c = lane; c < C; c += 32) dx[c] += r * (load_f32(g[c]) * w[c] - mean_dn - (x[c] - m) * r * mean_dn_xhat);
}

// Block `chunk` of the fused backward, thread (warp_id, lane): rows r0 + warp_id, r0 + warp_id + 8, ...
// of its kFusedRowChunk rows, then partial (chunks, 2, C)[chunk] = the warps' column sums added in warp
// order through sh (2·C floats, shared). Every thread reaches every block.sync().
#pragma nv_exec_check_disable
template <int kCols, class DOut, class Warp, class Block>
__host__ __device__ __forceinline__ void backward_fused_block(float* __restrict__ partial, float* __restrict__ sh,
                                                              float* __restrict__ dinp, const DOut* __restrict__ dout,
                                                              const float* __restrict__ inp,
                                                              const float* __restrict__ w,
                                                              const float* __restrict__ mean,
                                                              const float* __restrict__ rstd, int chunk, int warp_id,
                                                              int lane, int R, int C, const Warp& warp,
                                                              const Block& block) {
  constexpr int kWarps = LayerNormTraits::kWarpsPerBlock;
  float acc_dw[kCols], acc_db[kCols];
#pragma unroll
  for (int j = 0; j < kCols; ++j) acc_dw[j] = acc_db[j] = 0.f;
  const int r0 = chunk * LayerNormTraits::kFusedRowChunk;
  const int r1 = R < r0 + LayerNormTraits::kFusedRowChunk ? R : r0 + LayerNormTraits::kFusedRowChunk;
  for (int row = r0 + warp_id; row < r1; row += kWarps)
    backward_fused_row<kCols>(dinp, acc_dw, acc_db, dout, inp, w, mean, rstd, row, lane, C, warp);
  for (int k = 0; k < kWarps; ++k) {
    if (warp_id == k) {
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int c = lane + 32 * j;
        if (c < C) {
          sh[c] = k == 0 ? acc_dw[j] : sh[c] + acc_dw[j];
          sh[C + c] = k == 0 ? acc_db[j] : sh[C + c] + acc_db[j];
        }
      }
    }
    block.sync();
  }
  for (int c = warp_id * 32 + lane; c < C; c += 32 * kWarps) {
    partial[((size_t)chunk * 2) * C + c] = sh[c];
    partial[((size_t)chunk * 2 + 1) * C + c] = sh[C + c];
  }
}

struct DeviceBlock {
  __device__ __forceinline__ void sync() const { __syncthreads(); }
};

// dw[c] += Σ_chunks partial[chunk][0][c]; db[c] += Σ_chunks partial[chunk][1][c], in chunk order
__host__ __device__ __forceinline__ void reduce_chunks_column(float* __restrict__ dw, float* __restrict__ db,
                                                              const float* __restrict__ partial, int chunks, int C,
                                                              int c) {
  float a = 0.f, b = 0.f;
  for (int k = 0; k < chunks; ++k) {
    a += partial[(size_t)k * 2 * C + c];
    b += partial[(size_t)k * 2 * C + C + c];
  }
  dw[c] += a;
  db[c] += b;
}

}  // namespace layernorm_detail

template <class Out>
static __global__ void layernorm_forward_kernel(Out* __restrict__ out, float* __restrict__ mean, float* __restrict__ rstd,
                                                const float* __restrict__ inp, const float* __restrict__ w,
                                                const float* __restrict__ b, int R, int C, float eps) {
  const int row = blockIdx.x * LayerNormTraits::kWarpsPerBlock + threadIdx.x / 32;
  if (row >= R) return;
  layernorm_detail::forward_row(out, mean, rstd, inp, w, b, row, threadIdx.x % 32, C, eps,
                                layernorm_detail::DeviceWarp{});
}

template <class DOut>
static __global__ void layernorm_backward_input_kernel(float* __restrict__ dinp, const DOut* __restrict__ dout,
                                                       const float* __restrict__ inp, const float* __restrict__ w,
                                                       const float* __restrict__ mean, const float* __restrict__ rstd,
                                                       int R, int C) {
  const int row = blockIdx.x * LayerNormTraits::kWarpsPerBlock + threadIdx.x / 32;
  if (row >= R) return;
  layernorm_detail::backward_input_row(dinp, dout, inp, w, mean, rstd, row, threadIdx.x % 32, C,
                                       layernorm_detail::DeviceWarp{});
}

// partial (chunks, 2, C): per row chunk, Σ dout·x̂ and Σ dout
template <class DOut>
static __global__ void layernorm_backward_params_partial_kernel(float* __restrict__ partial,
                                                                const DOut* __restrict__ dout,
                                                                const float* __restrict__ inp,
                                                                const float* __restrict__ mean,
                                                                const float* __restrict__ rstd, int R, int C) {
  const int c = blockIdx.x * LayerNormTraits::kColumnsPerBlock + threadIdx.x;
  if (c >= C) return;
  layernorm_detail::backward_params_partial_column(partial, dout, inp, mean, rstd, c, blockIdx.y, R, C);
}

// dw (C) += Σ_chunks partial[chunk][0]; db (C) += Σ_chunks partial[chunk][1]
static __global__ void layernorm_reduce_chunks_kernel(float* __restrict__ dw, float* __restrict__ db,
                                               const float* __restrict__ partial, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  layernorm_detail::reduce_chunks_column(dw, db, partial, chunks, C, c);
}

// One block per kFusedRowChunk rows; sh holds 2·C ≤ 2·32·kCols floats
template <int kCols>
static __global__ void __launch_bounds__(32 * LayerNormTraits::kWarpsPerBlock)
    layernorm_backward_fused_kernel(float* __restrict__ partial, float* __restrict__ dinp,
                                    const __nv_bfloat16* __restrict__ dout, const float* __restrict__ inp,
                                    const float* __restrict__ w, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, int R, int C) {
  __shared__ float sh[2 * 32 * kCols];
  layernorm_detail::backward_fused_block<kCols>(partial, sh, dinp, dout, inp, w, mean, rstd, blockIdx.x,
                                                threadIdx.x / 32, threadIdx.x % 32, R, C,
                                                layernorm_detail::DeviceWarp{}, layernorm_detail::DeviceBlock{});
}

// The fused kernel's columns per lane for C (a few instantiations), 0 when C is too wide for it
__host__ __device__ inline int layernorm_fused_columns_per_lane(int C) {
  const int cols = (C + 31) / 32;
  if (cols <= 2) return 2;
  if (cols <= 8) return 8;
  if (cols <= 16) return 16;
  if (cols <= 24) return 24;
  if (cols <= LayerNormTraits::kFusedMaxColumnsPerLane) return LayerNormTraits::kFusedMaxColumnsPerLane;
  return 0;
}

// Enough for the partials of either backward (chunks of kRowChunk or of kFusedRowChunk rows)
inline size_t layernorm_scratch_floats(int R, int C) {
  constexpr int chunk = LayerNormTraits::kRowChunk < LayerNormTraits::kFusedRowChunk ? LayerNormTraits::kRowChunk
                                                                                    : LayerNormTraits::kFusedRowChunk;
  return (size_t)ceil_div(R, chunk) * 2 * C;
}

namespace layernorm_detail {
template <int kCols>
inline void launch_backward_fused(float* partial, float* dinp, const __nv_bfloat16* dout, const float* inp,
                                  const float* w, const float* mean, const float* rstd, int R, int C,
                                  cudaStream_t stream) {
  layernorm_backward_fused_kernel<kCols>
      <<<ceil_div(R, LayerNormTraits::kFusedRowChunk), 32 * LayerNormTraits::kWarpsPerBlock, 0, stream>>>(
          partial, dinp, dout, inp, w, mean, rstd, R, C);
  EMAE_CHECK_LAUNCH("layernorm_backward_fused_kernel");
}
}  // namespace layernorm_detail

// Out, DOut: float or bf16 (the storage of out and dout; the statistics and dinp, dw, db are fp32).
template <class Out>
inline void layernorm_forward(Out* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                              int R, int C, float eps, cudaStream_t stream) {
  if (R <= 0 || C <= 0) return;
  const int threads = 32 * LayerNormTraits::kWarpsPerBlock;
  layernorm_forward_kernel<<<ceil_div(R, LayerNormTraits::kWarpsPerBlock), threads, 0, stream>>>(out, mean, rstd, inp, w,
                                                                                                 b, R, C, eps);
  EMAE_CHECK_LAUNCH("layernorm_forward_kernel");
}

template <class DOut>
inline void layernorm_backward(float* dinp, float* dw, float* db, const DOut* dout, const float* inp, const float* w,
                               const float* mean, const float* rstd, int R, int C, float* scratch,
                               cudaStream_t stream) {
  if (R <= 0 || C <= 0) return;
  if constexpr (std::is_same_v<DOut, __nv_bfloat16>) {
    const int cols = layernorm_fused_columns_per_lane(C);
    if (cols != 0) {
      switch (cols) {
        case 2: layernorm_detail::launch_backward_fused<2>(scratch, dinp, dout, inp, w, mean, rstd, R, C, stream); break;
        case 8: layernorm_detail::launch_backward_fused<8>(scratch, dinp, dout, inp, w, mean, rstd, R, C, stream); break;
        case 16: layernorm_detail::launch_backward_fused<16>(scratch, dinp, dout, inp, w, mean, rstd, R, C, stream); break;
        case 24: layernorm_detail::launch_backward_fused<24>(scratch, dinp, dout, inp, w, mean, rstd, R, C, stream); break;
        default:
          layernorm_detail::launch_backward_fused<LayerNormTraits::kFusedMaxColumnsPerLane>(scratch, dinp, dout, inp, w,
                                                                                            mean, rstd, R, C, stream);
      }
      layernorm_reduce_chunks_kernel<<<ceil_div(C, 128), 128, 0, stream>>>(
          dw, db, scratch, ceil_div(R, LayerNormTraits::kFusedRowChunk), C);
      EMAE_CHECK_LAUNCH("layernorm_reduce_chunks_kernel");
      return;
    }
  }
  const int threads = 32 * LayerNormTraits::kWarpsPerBlock;
  layernorm_backward_input_kernel<<<ceil_div(R, LayerNormTraits::kWarpsPerBlock), threads, 0, stream>>>(
      dinp, dout, inp, w, mean, rstd, R, C);
  EMAE_CHECK_LAUNCH("layernorm_backward_input_kernel");
  const int chunks = ceil_div(R, LayerNormTraits::kRowChunk);
  dim3 grid(ceil_div(C, LayerNormTraits::kColumnsPerBlock), chunks);
  layernorm_backward_params_partial_kernel<<<grid, LayerNormTraits::kColumnsPerBlock, 0, stream>>>(scratch, dout, inp,
                                                                                                  mean, rstd, R, C);
  EMAE_CHECK_LAUNCH("layernorm_backward_params_partial_kernel");
  layernorm_reduce_chunks_kernel<<<ceil_div(C, 128), 128, 0, stream>>>(dw, db, scratch, chunks, C);
  EMAE_CHECK_LAUNCH("layernorm_reduce_chunks_kernel");
}

}  // namespace emae::cuda
