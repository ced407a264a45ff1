// CPU emulation of cuda/attention.cuh, the SIMT (CUDA-core) attention kernels (no GPU needed): runs
// the header's own, unchanged kernels (attention_forward_kernel, attention_delta_kernel,
// attention_backward_q_kernel, attention_backward_kv_kernel) on the host for fp32 and bf16 storage.
// The header is compiled in this translation unit with shims in place of the CUDA built-ins (not
// by factoring the kernels into host-callable bodies: the verified fp32 code stays untouched):
//   __global__, __device__, __shared__, __launch_bounds__ expand to nothing for attention.cuh, so
//   its kernels become host functions and `extern __shared__ attention_smem[]` names the buffer
//   defined below; threadIdx, blockIdx, blockDim are the running fiber's; __syncthreads,
//   __syncwarp and __shfl_xor_sync are collectives of the fiber scheduler (fiber_block.h: a
//   block's 128 threads as fibers, warps run in an order shuffled per barrier phase, each as far as
//   it goes); __ldg is a load that must be aligned to its size and inside an input buffer.
//   common.cuh is compiled under the same shims but keeps its __global__ kernels (its launchers
//   configure them with <<<>>>, which only a __global__ function accepts); the shims of
//   threadIdx/blockIdx/blockDim are __host__ __device__ and read the built-ins in device code.
// The launches follow the launchers (attention_forward, attention_backward): their grids, shared
// memory sizes, dispatch_dims, softmax_scale and vec4 conditions; check_shape guards each.
// Checked per case against the double reference (attention_reference.h); the backward is fed the
// reference out (rounded to the storage type) and lse. Tolerances, relative L2 (σ: the RMS score):
// fp32 storage: t = 1e-5·max(1, σ/3) (attention_check.cu's SIMT tolerance); bf16 storage (the
// inputs rounded to bf16, the reference computed on them): out u/2 + t, lse t (as attention_check.cu),
// dq, dk, dv u·(1 + σ/8) + t, u = 2^-8: D_i = dout_i·out_i is taken from the bf16 out, and
// ds = p (dp − D) cancels where the softmax is peaky, so out's rounding (u/2) reaches dq and dk
// amplified: 4.1e-3 at σ 5.3 and 5.0e-3 at σ 21 here, above u + t (3.9e-3..4.1e-3), the bound
// attention_check.cu first had; it uses this one now (attention_reference.h's table).
// bf16 storage is also pinned exactly: the same inputs run with fp32 storage, and every bf16
// output must be that run's output rounded to nearest even, bit for bit (lse the same bits): the
// math is fp32 in both, only loads and stores differ.
// Every output is NaN-poisoned before and must be written; guard cells after every buffer and past
// the block's shared memory (NaN-poisoned per block) must stay untouched; every collective must be
// reached by all 32 lanes of a warp (with a full mask and the same lane mask), every barrier by all
// 128 threads (else: divergence or deadlock is reported).
//   nvcc -std=c++17 -O2 --expt-relaxed-constexpr -arch=sm_80 -I. -Inative cuda/dev/attention_simt_emulate.cu \
//     -o /tmp/attention_simt_emulate   (the header's kernels are compiled for the host only)
//   /tmp/attention_simt_emulate
// Mutation check: 8 deliberate one-line faults in attention.cuh (on copies of the header), each of
// which makes this program fail: bf16 store_elem rounding toward zero (bf16 ≠ fp32 rounded), bf16
// store_elem writing a float (guard overwritten), ldg_group4's bf16 halves swapped, its uint2 index
// 2c instead of c (__ldg outside the inputs), aligned_group4 asking 2-element alignment (misaligned
// __ldg), bf16 ldg_elem reading p + 1, the key kernel without the barrier after staging a query
// chunk, the forward without the __syncwarp before reading the weights.
// Exit status non-zero on any FAIL.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "core/act.h"
#include "cuda/dev/attention_reference.h"
#include "cuda/dev/fiber_block.h"
#include "cuda/dev/host_buffer.h"

namespace emae::dev::simt_emulation {

enum class Op { kRun, kSync, kShfl, kSyncWarp, kDone };
const char* op_name(Op op) {
  switch (op) {
    case Op::kRun: return "run";
    case Op::kSync: return "__syncthreads";
    case Op::kShfl: return "__shfl_xor_sync";
    case Op::kSyncWarp: return "__syncwarp";
    case Op::kDone: return "exit";
  }
  return "?";
}

// a thread's operands and results of the warp collectives
struct Lane {
  float v = 0.f, v_out = 0.f;
  unsigned member_mask = 0;
  int lane_mask = 0, width = 0;
};

class SimtBlock : public FiberBlock<Op, Lane> {
 private:
  void complete(int w, Op op) override {
    Lane* lanes = &t[32 * w];
    for (int l = 0; l < 32; ++l)
      if (lanes[l].member_mask != 0xffffffffu)
        throw EmulationError(std::string(op_name(op)) + ": a member mask other than all 32 lanes");
    switch (op) {
      case Op::kShfl:
        for (int l = 0; l < 32; ++l) {
          if (lanes[l].lane_mask != lanes[0].lane_mask || lanes[l].width != 32)
            throw EmulationError("__shfl_xor_sync: lanes disagree on the lane mask, or a width other than 32");
          lanes[l].v_out = lanes[l ^ (lanes[l].lane_mask & 31)].v;
        }
        break;
      case Op::kSyncWarp: break;
      default: throw EmulationError(std::string("unexpected collective ") + op_name(op));
    }
  }
};

SimtBlock* g_block = nullptr;
// The first fault a fiber saw (an exception cannot unwind across fiber stacks): thrown by the
// scheduler after the block.
std::string g_fault;
void fault(const std::string& what) {
  if (g_fault.empty()) g_fault = what;
}

// The buffers __ldg may read: [begin, end) byte ranges.
struct Readable {
  const void* begin;
  const void* end;
};
std::vector<Readable> g_readable;

int host_tid() { return g_block->running(); }

__host__ __device__ inline uint3 thread_idx() {
#ifdef __CUDA_ARCH__
  return threadIdx;
#else
  return make_uint3((unsigned)host_tid(), 0u, 0u);
#endif
}
__host__ __device__ inline uint3 block_idx() {
#ifdef __CUDA_ARCH__
  return blockIdx;
#else
  return make_uint3((unsigned)g_block->bx, (unsigned)g_block->by, 0u);
#endif
}
__host__ __device__ inline dim3 block_dim() {
#ifdef __CUDA_ARCH__
  return blockDim;
#else
  return dim3(SimtBlock::kThreads, 1, 1);
#endif
}

void sync_threads() { g_block->wait(host_tid(), Op::kSync); }

void sync_warp(unsigned member_mask = 0xffffffffu) {
  const int tid = host_tid();
  g_block->t[tid].member_mask = member_mask;
  g_block->wait(tid, Op::kSyncWarp);
}

float shfl_xor_sync(unsigned member_mask, float v, int lane_mask, int width = 32) {
  const int tid = host_tid();
  Lane& l = g_block->t[tid];
  l.v = v;
  l.member_mask = member_mask;
  l.lane_mask = lane_mask;
  l.width = width;
  g_block->wait(tid, Op::kShfl);
  return l.v_out;
}

// __ldg: a global load, aligned to its size (float4 16 bytes, uint2 8, ...) and inside an input
template <class T>
T ldg(const T* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  if (reinterpret_cast<uintptr_t>(p) % sizeof(T)) {
    fault("__ldg of " + std::to_string(sizeof(T)) + " bytes at an address not aligned to its size");
    return T{};
  }
  for (const Readable& r : g_readable)
    if (b >= r.begin && b + sizeof(T) <= r.end) return *p;
  fault("__ldg of " + std::to_string(sizeof(T)) + " bytes outside the input buffers");
  return T{};
}

}  // namespace emae::dev::simt_emulation

// The shims (see the header comment). Everything the CUDA headers declare is already included.
#undef __device__
#define __device__
#undef __shared__
#define __shared__
#undef __launch_bounds__
#define __launch_bounds__(...)
#define threadIdx (::emae::dev::simt_emulation::thread_idx())
#define blockIdx (::emae::dev::simt_emulation::block_idx())
#define blockDim (::emae::dev::simt_emulation::block_dim())
#define __syncthreads() ::emae::dev::simt_emulation::sync_threads()
#define __syncwarp(...) ::emae::dev::simt_emulation::sync_warp(__VA_ARGS__)
#define __shfl_xor_sync ::emae::dev::simt_emulation::shfl_xor_sync
#define __ldg ::emae::dev::simt_emulation::ldg
#include "cuda/common.cuh"
#undef __global__
#define __global__
#include "cuda/attention.cuh"
#include "cuda/dev/check_common.h"

namespace emae::cuda::attention_detail {
// the dynamic shared memory of the block being emulated: the largest kernel's, then a guard
constexpr size_t kSmemGuardBytes = 256;
constexpr size_t kSmemCapacity = AT::backward_kv_smem_floats(AT::kMaxHeadDim) * sizeof(float) + kSmemGuardBytes;
static_assert(kSmemCapacity % sizeof(float4) == 0, "whole float4s");
float4 attention_smem[kSmemCapacity / sizeof(float4)];
}  // namespace emae::cuda::attention_detail

namespace {

using namespace emae::dev;
using namespace emae::dev::simt_emulation;
using emae::DType;
using bf16_t = __nv_bfloat16;
namespace ad = emae::cuda::attention_detail;
using AT = emae::cuda::AttentionTraits;

// kernel() for every block of a gx × gy grid with `bytes` of dynamic shared memory
void launch(int gx, int gy, size_t bytes, const std::function<void()>& kernel) {
  unsigned char* smem = reinterpret_cast<unsigned char*>(ad::attention_smem);
  for (int by = 0; by < gy; ++by)
    for (int bx = 0; bx < gx; ++bx) {
      g_block->run_block(bx, by, smem, ad::kSmemCapacity, bytes, [&](int) { kernel(); });
      if (!g_fault.empty()) throw EmulationError(g_fault);
    }
}

// attention_forward's launch
template <class Elem>
void forward(Elem* out, float* lse, const Elem* qkv, int S, int T, int H, int dh) {
  constexpr const char* op = "attention_forward";
  ad::check_shape(op, S, T, H, dh);
  const bool vec4 = dh % 4 == 0 && ad::aligned_group4(qkv);
  const float scale = ad::softmax_scale(dh);
  ad::dispatch_dims(op, dh, [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    launch(S * H, emae::cuda::ceil_div(T, AT::kRows), AT::forward_smem_floats(dh) * sizeof(float),
           [&] { ad::attention_forward_kernel<kDims, Elem>(out, lse, qkv, T, H, dh, scale, vec4); });
  });
}

// attention_backward's launches: delta, then the query side, then the key side
template <class Elem>
void backward(Elem* dqkv, const Elem* dout, const Elem* qkv, const Elem* out, const float* lse, int S, int T, int H,
              int dh, float* scratch) {
  constexpr const char* op = "attention_backward";
  ad::check_shape(op, S, T, H, dh);
  const float scale = ad::softmax_scale(dh);
  const bool vec4 = dh % 4 == 0 && ad::aligned_group4(qkv) && ad::aligned_group4(dout);
  const long long rows = (long long)S * H * T;
  launch(emae::cuda::ceil_div(rows, AT::kWarps), 1, 0,
         [&] { ad::attention_delta_kernel<Elem>(scratch, dout, out, S, T, H, dh); });
  ad::dispatch_dims(op, dh, [&](auto dims) {
    constexpr int kDims = decltype(dims)::value;
    const int gy = emae::cuda::ceil_div(T, AT::kRows);
    launch(S * H, gy, AT::backward_q_smem_floats(dh) * sizeof(float), [&] {
      ad::attention_backward_q_kernel<kDims, Elem>(dqkv, dout, qkv, lse, scratch, T, H, dh, scale, vec4);
    });
    launch(S * H, gy, AT::backward_kv_smem_floats(dh) * sizeof(float), [&] {
      ad::attention_backward_kv_kernel<kDims, Elem>(dqkv, dout, qkv, lse, scratch, T, H, dh, scale, vec4);
    });
  });
}

struct Case {
  Shape shape;
  float amp;
  size_t offset;  // elements past an aligned allocation, for every buffer
  const char* note;
};

// What one storage type's kernels produced from the given inputs.
struct Outputs {
  std::vector<float> out, lse, dqkv;
  std::vector<uint16_t> out_bits, dqkv_bits;  // bf16 storage: as stored
  bool guards = true;
  std::string error;
};

template <class Elem>
std::vector<uint16_t> bits_of(const HostBuffer<Elem>& b) {
  if constexpr (std::is_same_v<Elem, bf16_t>)
    return std::vector<uint16_t>(b.storage.begin() + b.offset, b.storage.begin() + b.offset + b.n);
  else
    return {};
}

// forward on qkv; backward on qkv, dout and the given out and lse (values exact in Elem)
template <class Elem>
Outputs emulate(const Case& c, const std::vector<float>& qkv, const std::vector<float>& dout,
                const std::vector<float>& out_bwd, const std::vector<float>& lse_bwd) {
  const Shape& sh = c.shape;
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh;
  const size_t n_qkv = qkv.size(), n_out = dout.size(), n_lse = (size_t)S * H * T;
  HostBuffer<Elem> b_qkv(n_qkv, c.offset), b_dout(n_out, c.offset), b_out(n_out, c.offset), b_dqkv(n_qkv, c.offset),
      b_out_bwd(n_out, c.offset);
  HostBuffer<float> b_lse(n_lse, c.offset), b_lse_bwd(n_lse, c.offset), b_delta(n_lse, c.offset);
  b_qkv.fill(qkv);
  b_dout.fill(dout);
  b_out_bwd.fill(out_bwd);
  b_lse_bwd.fill(lse_bwd);
  const auto range = [](auto& b) { return Readable{b.data(), b.data() + b.n}; };
  g_readable = {range(b_qkv), range(b_dout)};  // what the kernels __ldg
  g_fault.clear();
  Outputs o;
  try {
    forward<Elem>(b_out.data(), b_lse.data(), b_qkv.data(), S, T, H, dh);
    backward<Elem>(b_dqkv.data(), b_dout.data(), b_qkv.data(), b_out_bwd.data(), b_lse_bwd.data(), S, T, H, dh,
                   b_delta.data());
  } catch (const EmulationError& e) {
    o.error = e.what();
  } catch (const std::invalid_argument& e) {
    o.error = std::string("refused: ") + e.what();
  }
  o.out = b_out.values();
  o.lse = b_lse.values();
  o.dqkv = b_dqkv.values();
  o.out_bits = bits_of(b_out);
  o.dqkv_bits = bits_of(b_dqkv);
  o.guards = b_qkv.guard_ok() && b_dout.guard_ok() && b_out.guard_ok() && b_dqkv.guard_ok() && b_out_bwd.guard_ok() &&
             b_lse.guard_ok() && b_lse_bwd.guard_ok() && b_delta.guard_ok();
  return o;
}

// elements of the bf16 run that are not the fp32 run's values rounded to nearest even
size_t not_rounded(const std::vector<uint16_t>& bf16_bits, const std::vector<float>& fp32) {
  size_t bad = 0;
  for (size_t i = 0; i < fp32.size(); ++i) bad += bf16_bits[i] != emae::bf16_from_float(fp32[i]);
  return bad;
}

template <class Elem>
int run_case(const Case& c, uint64_t seed) {
  constexpr bool kBf16 = std::is_same_v<Elem, bf16_t>;
  const Shape& sh = c.shape;
  const int S = sh.S, T = sh.T, H = sh.H, D = H * sh.dh;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D;
  // the inputs as stored: the reference sees what the kernels read
  const std::vector<float> qkv = rounded<Elem>(random_vector(n_qkv, seed, c.amp)),
                           dout = rounded<Elem>(random_vector(n_out, seed + 1, 1.f));
  const Reference ref = reference(qkv, dout, sh);
  const std::vector<float> out_bwd = rounded<Elem>(std::vector<float>(ref.out.begin(), ref.out.end())),
                           lse_bwd(ref.lse.begin(), ref.lse.end());
  const long long before = g_block->collectives;
  const Outputs got = emulate<Elem>(c, qkv, dout, out_bwd, lse_bwd);

  const auto all = [](size_t) { return true; };
  const auto part = [D](int k) { return [D, k](size_t i) { return (int)(i % (3 * (size_t)D)) / D == k; }; };
  const double e_out = rel_l2(got.out, ref.out, all), e_lse = rel_l2(got.lse, ref.lse, all);
  double e_dq = rel_l2(got.dqkv, ref.dqkv, part(0)), e_dk = rel_l2(got.dqkv, ref.dqkv, part(1)),
         e_dv = rel_l2(got.dqkv, ref.dqkv, part(2));
  if (T == 1) {  // dq = dk = 0 exactly (one key: no softmax gradient); measured against |dv| instead
    e_dq *= norm(ref.dqkv, part(0)) / norm(ref.dqkv, part(2));
    e_dk *= norm(ref.dqkv, part(1)) / norm(ref.dqkv, part(2));
  }
  // attention_check.cu's SIMT tolerances (attention_reference.h; see the header comment)
  const AttentionTolerance tol = attention_tolerance(false, kBf16, ref.score_rms);
  const double tol_out = tol.out, tol_grads = tol.grads, t32 = tol.lse;
  std::string error = got.error;
  // bf16: the same inputs with fp32 storage; each bf16 output must be its fp32 output rounded
  std::string twin;
  if constexpr (kBf16) {
    const Outputs f = emulate<float>(c, qkv, dout, out_bwd, lse_bwd);
    if (!f.error.empty() && error.empty()) error = "fp32 twin: " + f.error;
    const size_t bad_out = not_rounded(got.out_bits, f.out), bad_dqkv = not_rounded(got.dqkv_bits, f.dqkv);
    size_t bad_lse = 0;
    for (size_t i = 0; i < f.lse.size(); ++i) bad_lse += std::memcmp(&f.lse[i], &got.lse[i], sizeof(float)) != 0;
    if (bad_out + bad_dqkv + bad_lse)
      twin = "  NOT THE FP32 RUN ROUNDED: out " + std::to_string(bad_out) + ", dqkv " + std::to_string(bad_dqkv) +
             ", lse " + std::to_string(bad_lse) + " elements";
  }
  const bool ok = error.empty() && twin.empty() && e_out <= tol_out && e_lse <= t32 && e_dq <= tol_grads &&
                  e_dk <= tol_grads && e_dv <= tol_grads && got.guards;  // NaN (an unwritten output) fails
  const bool vec4 = sh.dh % 4 == 0 && (c.offset * sizeof(Elem)) % (4 * sizeof(Elem)) == 0;
  std::printf("%s %s S=%d T=%d H=%d dh=%d amp=%g offset=%zu (kDims %d, chunks %d, vec4 %d)%s%s  σ %.2f  out %.2e "
              "(tol %.1e)  lse %.2e (tol %.1e)  dq %.2e  dk %.2e  dv %.2e (tol %.1e)%s  [%lld collectives]%s%s%s%s\n",
              ok ? "PASS" : "FAIL", kBf16 ? "bf16" : "fp32", S, T, H, sh.dh, c.amp, c.offset, (sh.dh + 31) / 32,
              emae::cuda::ceil_div(T, AT::kChunk), (int)vec4, c.note[0] ? "  " : "", c.note, ref.score_rms, e_out,
              tol_out, e_lse, t32, e_dq, e_dk, e_dv, tol_grads, kBf16 && twin.empty() ? "  = fp32 rounded" : "",
              g_block->collectives - before, got.guards ? "" : "  GUARD OVERWRITTEN", twin.c_str(),
              error.empty() ? "" : "  ERROR: ", error.c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char**) {
  if (argc > 1) {
    std::fprintf(stderr, "usage: attention_simt_emulate (no arguments)\n");
    return 2;
  }
  g_block = new SimtBlock();
  const std::vector<Case> cases = {
      {{2, 1, 3, 32}, 1.f, 0, "(T = 1)"},
      {{1, 5, 2, 64}, 1.f, 0, "(T = 5)"},
      {{2, 50, 3, 64}, 1.f, 0, "(encoder: two chunks)"},
      {{1, 50, 2, 64}, 4.f, 0, "(encoder, peaky softmax)"},
      {{1, 197, 2, 32}, 1.f, 0, "(decoder: seven chunks)"},
      {{1, 197, 1, 32}, 8.f, 0, "(decoder, very large logits)"},
      {{1, 70, 2, 50}, 1.f, 0, "(dh = 50: element staging, kDims 2)"},
      {{2, 33, 1, 7}, 1.f, 0, "(dh = 7, T = 33)"},
      {{1, 65, 1, 96}, 1.f, 0, "(dh = 96: kDims 3)"},
      {{1, 37, 2, 100}, 1.f, 0, "(dh = 100: kDims 4, partial last lane group)"},
      {{1, 50, 1, 128}, 1.f, 0, "(dh = 128, the maximum)"},
      {{1, 100, 1, 128}, 4.f, 1, "(dh = 128, peaky, misaligned: element staging)"},
      {{1, 50, 1, 64}, 1.f, 2, "(offset 2: element staging)"},
      {{1, 50, 1, 64}, 1.f, 4, "(offset 4: bf16 rows 8-byte aligned only)"},
  };
  int failures = 0;
  uint64_t seed = 7;
  for (const Case& c : cases) {
    seed += 10;
    failures += run_case<float>(c, seed);
    failures += run_case<bf16_t>(c, seed);
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
