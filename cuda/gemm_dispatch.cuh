// Which kernel runs a GemmParams (operands in any of the step's layouts), and running it.
//   mma   gemm.cuh's kernel: fp32 views only, operands converted while loading, mma.sync; verified
//         on an H100; the default until a device run verifies the others
//   sm80  gemm_via_bf16 + gemm_sm80.cuh (cp.async multistage, mma.sync; compute capability ≥ 8.0;
//         reads bf16 operands in place in every layout)
//   sm90  gemm_via_bf16 + gemm_sm90.cuh (TMA + wgmma; compute capability 9.0 with the sm_90a build)
// The bf16 paths take fp32 or bf16 operand views, and C and the GELU buffers in either type.
// EMAE_CUDA_GEMM=mma|sm80|sm90|auto chooses; auto (or unset) is mma, or with bf16 activations the
// best bf16 path (select_gemm_path). A path the device cannot run
// is refused with a sentence when the backend is created, never silently replaced.
#pragma once
#include <cstdlib>
#include <string>

#include "cuda/env_switch.h"
#include "cuda/gemm.cuh"
#include "cuda/gemm_bf16.cuh"
#include "cuda/gemm_sm80.cuh"
#include "cuda/gemm_sm90.cuh"

namespace emae::cuda {

// Whether an operand view with row stride ld is what the bf16 kernels read as it is: bf16 with a
// 16-byte aligned base and row stride, stored K-contiguous or M-/N-contiguous alike (both kernels
// read MN-major operands: sm80 by MN-major tiles and ldmatrix.trans, sm90 by wgmma's transposed
// operands). A with a_sums (stored (K, M)) too: its row sums are then a column-sum pass over the
// bf16 A (convert_operands); a copied A gets them on the way instead.
inline bool direct_operand(ActIn v, int ld) {
  return v.is_bf16() && ld % 8 == 0 && reinterpret_cast<uintptr_t>(v.data) % 16 == 0;
}
inline bool direct_a(const GemmParams& p) { return direct_operand(p.A, p.lda); }
inline bool direct_b(const GemmParams& p) { return direct_operand(p.B, p.ldb); }

// bf16 elements gemm_via_bf16 needs for the K-contiguous copies of A (M × ld) and B (N × ld), of
// those that are not read in place (direct_a, direct_b).
inline size_t gemm_operand_elems(const GemmParams& p) {
  return (size_t)((direct_a(p) ? 0 : p.M) + (direct_b(p) ? 0 : p.N)) * bf16_ld(p.K);
}

// p's epilogue as GemmBf16Params fields (no operands).
inline GemmBf16Params bf16_epilogue(const GemmParams& p) {
  GemmBf16Params q;
  q.M = p.M; q.N = p.N; q.K = p.K;
  q.C = p.C; q.ldc = p.ldc; q.accumulate = p.accumulate; q.bias = p.bias; q.residual = p.residual;
  q.gelu_out = p.gelu_out; q.gelu_inp = p.gelu_inp;
  return q;
}

// Calls f with v's typed pointer: const float* or const bf16*.
template <class F>
inline void with_operand(ActIn v, F&& f) {
  if (v.is_bf16()) f(static_cast<const bf16*>(v.data));
  else f(v.f32("gemm operand"));
}

// The bf16 problem of p for the bf16 kernels: its epilogue, and A and B as the kernels read them.
// An operand that is direct (direct_a, direct_b: the step's bf16 activations and the bf16 weight copy
// in the forward GEMMs, dout in the input-gradient GEMM, and the MN-major ones: the weight in the
// input-gradient GEMM, dout and inp in the weight-gradient GEMM) is used in place, MN-major where
// stored so; any other is copied once into `operands` (gemm_operand_elems(p) bf16, 16-byte
// aligned): fp32 converted, and transposed where stored M- or N-contiguous. p.a_sums is added to
// while A is copied, or by column_sum_accumulate over an A used in place: the same sums bit for bit
// (partials in p.workspace, free again when this returns, in stream order). p.K > 0.
inline GemmBf16Params convert_operands(const GemmParams& p, bf16* operands, cudaStream_t stream) {
  GemmBf16Params q = bf16_epilogue(p);
  const int ld = bf16_ld(p.K);
  const bool a_in_place = direct_a(p), b_in_place = direct_b(p);
  if (!(a_in_place && b_in_place) && (!operands || reinterpret_cast<uintptr_t>(operands) % 16))
    throw std::invalid_argument("gemm_via_bf16: operands must be 16-byte aligned");
  bf16* next = operands;  // each copy takes rows·ld elements: a multiple of 16 bytes
  if (a_in_place) {
    q.A = static_cast<const bf16*>(p.A.data); q.lda = p.lda;
    q.a_mn_major = p.trans_a;  // A stored (K, M)
    if (p.a_sums) column_sum_accumulate(p.a_sums, q.A, p.K, p.M, p.lda, p.workspace, stream);  // a_sums: trans_a
  } else {
    with_operand(p.A, [&](const auto* a) {
      if (p.a_sums)  // trans_a (check_gemm_params): A stored (K, M)
        convert_to_bf16_with_row_sums(next, p.a_sums, a, p.M, p.K, p.lda, p.workspace, stream);
      else
        convert_to_bf16(next, a, p.M, p.K, p.lda, p.trans_a, stream);  // A stored (K, M) when trans_a
    });
    q.A = next; q.lda = ld;
    next += (size_t)p.M * ld;
  }
  if (b_in_place) {
    q.B = static_cast<const bf16*>(p.B.data); q.ldb = p.ldb;
    q.b_mn_major = !p.trans_b;  // B stored (K, N)
  } else {
    // B stored (K, N) unless trans_b
    with_operand(p.B, [&](const auto* b) { convert_to_bf16(next, b, p.N, p.K, p.ldb, !p.trans_b, stream); });
    q.B = next; q.ldb = ld;
  }
  return q;
}

// q (splits not yet chosen) on the sm80 or sm90 kernel, split-K partials in `workspace`.
inline void run_bf16(GemmBf16Params q, GemmPath path, int sms, float* workspace, size_t workspace_floats,
                     cudaStream_t stream) {
  q.partial = workspace;
  if (!workspace) workspace_floats = 0;
  if (path == GemmPath::kSm90) {
    using T = sm90::Traits<128>;
    choose_splits(q, T::kBM, T::kBN, T::kBK, sms, workspace_floats);
    check_bf16_params(q);
    sm90::launch<128>(q, sms, stream);
  } else if (path == GemmPath::kSm80) {
    using T = sm80::Traits;
    choose_splits(q, T::kBM, T::kBN, T::kBK, sms, workspace_floats);
    check_bf16_params(q);
    sm80::launch(q, sms, stream);
  } else {
    throw std::invalid_argument("run_bf16: path must be sm80 or sm90");
  }
  if (q.splits > 1) gemm_bf16_reduce(q, stream);
}

// p on a bf16 kernel (convert_operands, then run_bf16).
inline void gemm_via_bf16(const GemmParams& p, GemmPath path, bf16* operands, int sms, cudaStream_t stream) {
  check_gemm_params(p);
  if (p.M == 0) return;
  if (p.N == 0) {  // no product, no operand copies (operands may be empty); the row sums of A still count
    if (p.a_sums)
      with_operand(p.A, [&](const auto* a) { column_sum_accumulate(p.a_sums, a, p.K, p.M, p.lda, p.workspace, stream); });
    return;
  }
  if (p.K == 0) {  // the epilogue of zero sums: the reduction over no partials (a_sums: += nothing)
    GemmBf16Params q = bf16_epilogue(p);
    q.splits = 0;
    gemm_bf16_reduce(q, stream);
    return;
  }
  run_bf16(convert_operands(p, operands, stream), path, sms, p.workspace, p.workspace_floats, stream);
}

// The path EMAE_CUDA_GEMM asks for on the current device, for a backend storing activations as
// `activations`; throws a sentence when it cannot run here. auto is mma for fp32 activations; bf16
// activations need a bf16-operand kernel, so auto then picks sm90 where its kernels load (9.x, the
// 90a build), else sm80, and an explicit mma is refused.
inline GemmPath select_gemm_path(DType activations = DType::kF32) {
  const std::string want = env_switch("EMAE_CUDA_GEMM", {"auto", "mma", "sm80", "sm90"});
  if (activations == DType::kBF16 && want == "mma")
    throw std::invalid_argument(
        "EMAE_CUDA_GEMM=mma reads fp32 operands; bf16 activations (EMAE_ACTIVATIONS=bf16) need EMAE_CUDA_GEMM=sm80, "
        "sm90 or auto");
  if (activations == DType::kBF16 && want == "auto")
    return sm90::sm90a_kernels_loaded() ? GemmPath::kSm90 : GemmPath::kSm80;
  if (want == "sm80") return GemmPath::kSm80;  // every device emae accepts (≥ 8.0)
  if (want == "sm90") {
    if (!sm90::sm90a_kernels_loaded())
      throw std::invalid_argument(
          "EMAE_CUDA_GEMM=sm90 needs a compute capability 9.0 GPU and an addon built for 90a "
          "(EMAE_CUDA_ARCHITECTURES containing 90a); this device or build cannot run it");
    return GemmPath::kSm90;
  }
  return GemmPath::kMma;
}

// A GEMM runner for the matmul_*_with wrappers: the chosen path, its bf16 operand scratch.
template <class OperandScratch>
struct GemmRunner {
  GemmPath path;
  int sms;
  OperandScratch& operands;  // get_as<bf16>(count) → device pointer, grows as needed
  cudaStream_t stream;
  void operator()(const GemmParams& p) const {
    if (path == GemmPath::kMma) return gemm(p, stream);
    gemm_via_bf16(p, path, operands.template get_as<bf16>(gemm_operand_elems(p)), sms, stream);
  }
};

}  // namespace emae::cuda
