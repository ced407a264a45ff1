// CPU emulation of the memory-bound kernels with bf16 activation storage (issue 11): the element,
// row and stride bodies of cuda/layernorm.cuh (the three-kernel backward and the fused one that bf16
// dout takes), cuda/loss.cuh (the item and cls-row bodies), cuda/optim.cuh (GELU, AdamW with its
// bf16 weight copy, the flat conversion) and cuda/tokens.cuh run on the host, over the grids of
// their launchers. Warp-wide bodies run a block's lanes as fibers (fiber_block.h: a warp's 32 lanes
// meet at each collective, divergence is an error): Warp::sum is the GPU's xor butterfly (warp_sum),
// value for value, shfl_xor passes values as __shfl_xor_sync; a block's barrier is a barrier of its
// fibers, its warps run in a shuffled order per barrier phase.
// Each op runs twice: the float instantiation on the bf16 inputs widened to fp32, and the bf16
// instantiation on the bf16 inputs. Because both compute in fp32 and round only on store, the bf16
// outputs must equal the fp32 outputs rounded to nearest even (act.h's bf16_from_float) and every
// fp32 output (statistics, dinp, dw, db, x, z, AdamW state, loss sums) must be the same bits. The
// fp32 runs are also checked against plain references (double for LayerNorm, GELU and the losses,
// exact for the token ops), so the comparison is not between two equally wrong results.
// Build: nvcc -std=c++17 -O2 --expt-relaxed-constexpr -arch=sm_80 -I. -Inative
//        cuda/dev/elementwise_bf16_emulate.cu -o /tmp/elementwise_bf16_emulate (run by
//        test/cuda-emulation.test.ts; the device kernels of both instantiations are compiled too).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "core/act.h"
#include "cuda/dev/check_common.h"
#include "cuda/dev/fiber_block.h"
#include "cuda/layernorm.cuh"
#include "cuda/loss.cuh"
#include "cuda/optim.cuh"
#include "cuda/tokens.cuh"

namespace {

namespace ec = emae::cuda;
using bf16 = __nv_bfloat16;
using emae::bf16_from_float;
using emae::float_from_bf16;
using emae::PartGeometry;
using emae::dev::EmulationError;
using emae::dev::FiberBlock;
using emae::dev::random_vector;

int failures = 0;

void report(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

uint16_t bits(bf16 v) {
  uint16_t u;
  std::memcpy(&u, &v, 2);
  return u;
}
bf16 from_bits(uint16_t u) {
  bf16 v;
  std::memcpy(&v, &u, 2);
  return v;
}

// n bf16 values from random fp32 ones, and the same values widened to fp32
struct Bf16Input {
  std::vector<bf16> narrow;
  std::vector<float> wide;
  Bf16Input(size_t n, uint64_t seed, float amp) {
    for (float v : random_vector(n, seed, amp)) {
      narrow.push_back(from_bits(bf16_from_float(v)));
      wide.push_back(float_from_bf16(bf16_from_float(v)));
    }
  }
};

std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::vector<bf16> bf16_poison(size_t n) { return std::vector<bf16>(n, from_bits(0xffff)); }  // a NaN
std::vector<float> f32_poison(size_t n) { return std::vector<float>(n, std::nanf("")); }

// bf16 outputs = the fp32 outputs rounded, bit for bit
bool rounded_equal(const std::vector<bf16>& narrow, const std::vector<float>& wide) {
  if (narrow.size() != wide.size()) return false;
  for (size_t i = 0; i < wide.size(); ++i)
    if (bits(narrow[i]) != bf16_from_float(wide[i])) return false;
  return true;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- warps and blocks on the host ------------------------------------------------------------

// the scheduler's states and the bodies' collectives
enum class Op { kRun, kSync, kSum, kShfl, kDone };
const char* op_name(Op op) {
  switch (op) {
    case Op::kRun: return "run";
    case Op::kSync: return "__syncthreads";
    case Op::kSum: return "warp_sum";
    case Op::kShfl: return "__shfl_xor_sync";
    case Op::kDone: return "exit";
  }
  return "?";
}

// a thread's operand and result of a collective (sum: in place; shfl: value in place, offset)
struct Lane {
  float sum = 0.f;
  double shfl = 0.0;
  int offset = 0;
};

template <int Threads>
class HostBlock : public FiberBlock<Op, Lane, Threads> {
 private:
  void complete(int w, Op op) override {
    Lane* lanes = &this->t[32 * w];
    switch (op) {
      case Op::kSum: {
        // warp_sum's xor butterfly: each step v += the value of lane ^ offset, the same additions
        // in the same order
        float vals[32];
        for (int l = 0; l < 32; ++l) vals[l] = lanes[l].sum;
        for (int offset = 16; offset > 0; offset >>= 1) {
          float next[32];
          for (int l = 0; l < 32; ++l) next[l] = vals[l] + vals[l ^ offset];
          std::memcpy(vals, next, sizeof vals);
        }
        for (int l = 0; l < 32; ++l) lanes[l].sum = vals[l];
        break;
      }
      case Op::kShfl: {
        double vals[32];
        for (int l = 0; l < 32; ++l) {
          if (lanes[l].offset < 0 || lanes[l].offset > 31)
            throw EmulationError("__shfl_xor_sync: offset past the warp");
          vals[l] = lanes[l].shfl;
        }
        for (int l = 0; l < 32; ++l) lanes[l].shfl = vals[l ^ lanes[l].offset];
        break;
      }
      default: throw EmulationError(std::string("unexpected collective ") + op_name(op));
    }
  }
};

// one scheduler (and its fiber stacks) per block size, for every launch
template <int Threads>
HostBlock<Threads>& host_block() {
  static HostBlock<Threads> block;
  return block;
}

// A thread's Warp policy for the LayerNorm bodies: sum() completes when all 32 lanes of its warp ask.
template <int Threads>
struct FiberWarp {
  HostBlock<Threads>* block;
  int tid;
  float sum(float v) const {
    block->t[tid].sum = v;
    block->wait(tid, Op::kSum);
    return block->t[tid].sum;
  }
};

// A thread's Warp policy for the loss item: shfl_xor(v, offset) is the value lane ^ offset passed in
// the same call, as __shfl_xor_sync.
template <int Threads>
struct FiberShflWarp {
  HostBlock<Threads>* block;
  int tid;
  double shfl_xor(double v, int offset) const {
    block->t[tid].shfl = v;
    block->t[tid].offset = offset;
    block->wait(tid, Op::kShfl);
    return block->t[tid].shfl;
  }
};

// a block's __syncthreads as a barrier of its fibers
template <int Threads>
struct FiberBlockSync {
  HostBlock<Threads>* block;
  int tid;
  void sync() const { block->wait(tid, Op::kSync); }
};

// body(tid) for every thread of block bx of Threads threads; smem: the block's shared memory, of which
// the first `used` floats are the kernel's (NaN-poisoned per block), the rest a guard that must stay
// untouched; false (the reason printed) when the threads diverged at a collective or a barrier
template <int Threads>
bool run_host_block(int bx, std::vector<float>& smem, size_t used, const std::function<void(int)>& body) {
  try {
    host_block<Threads>().run_block(bx, 0, reinterpret_cast<unsigned char*>(smem.data()), smem.size() * sizeof(float),
                                    used * sizeof(float), body);
  } catch (const EmulationError& e) {
    std::printf("emulation error: %s\n", e.what());
    return false;
  }
  return true;
}

// body(row, lane, warp) for every row, one warp of 32 fibers per row; false if the lanes diverged
bool run_warp_rows(int R, const std::function<void(int, int, const FiberWarp<32>&)>& body) {
  std::vector<float> no_smem;
  bool ok = true;
  for (int row = 0; row < R; ++row) {
    const auto lane_body = [&](int lane) { body(row, lane, FiberWarp<32>{&host_block<32>(), lane}); };
    ok = run_host_block<32>(row, no_smem, 0, lane_body) && ok;
  }
  return ok;
}

// ---- LayerNorm ---------------------------------------------------------------------------------

// layernorm_forward's kernel over its grid (one warp per row)
template <class Out>
bool emulate_layernorm_forward(std::vector<Out>& out, std::vector<float>& mean, std::vector<float>& rstd,
                               const std::vector<float>& inp, const std::vector<float>& w, const std::vector<float>& b,
                               int R, int C, float eps) {
  return run_warp_rows(R, [&](int row, int lane, const FiberWarp<32>& warp) {
    ec::layernorm_detail::forward_row(out.data(), mean.data(), rstd.data(), inp.data(), w.data(), b.data(), row, lane,
                                      C, eps, warp);
  });
}

// layernorm_backward's three kernels: the input gradient rows, the chunk partials, their reduction
template <class DOut>
bool emulate_layernorm_backward(std::vector<float>& dinp, std::vector<float>& dw, std::vector<float>& db,
                                const std::vector<DOut>& dout, const std::vector<float>& inp,
                                const std::vector<float>& w, const std::vector<float>& mean,
                                const std::vector<float>& rstd, int R, int C) {
  const bool ok = run_warp_rows(R, [&](int row, int lane, const FiberWarp<32>& warp) {
    ec::layernorm_detail::backward_input_row(dinp.data(), dout.data(), inp.data(), w.data(), mean.data(), rstd.data(),
                                             row, lane, C, warp);
  });
  const int chunks = ec::ceil_div(R, ec::LayerNormTraits::kRowChunk);
  std::vector<float> partial = f32_poison(ec::layernorm_scratch_floats(R, C));
  for (int chunk = 0; chunk < chunks; ++chunk)
    for (int c = 0; c < C; ++c)
      ec::layernorm_detail::backward_params_partial_column(partial.data(), dout.data(), inp.data(), mean.data(),
                                                           rstd.data(), c, chunk, R, C);
  for (int c = 0; c < C; ++c) ec::layernorm_detail::reduce_chunks_column(dw.data(), db.data(), partial.data(), chunks, C, c);
  return ok;
}

// layernorm_backward's fused path (bf16 dout): the fused kernel over its grid (kFusedRowChunk rows
// per block, 8 warps of 32 fibers, its static shared array sh[2·32·kCols]), then the chunk
// reduction; false if the threads diverged at a collective or a barrier
template <int kCols>
bool emulate_layernorm_backward_fused(std::vector<float>& dinp, std::vector<float>& dw, std::vector<float>& db,
                                      const std::vector<bf16>& dout, const std::vector<float>& inp,
                                      const std::vector<float>& w, const std::vector<float>& mean,
                                      const std::vector<float>& rstd, int R, int C) {
  constexpr int kThreads = 32 * ec::LayerNormTraits::kWarpsPerBlock;
  constexpr size_t kShared = 2 * 32 * kCols, kGuard = 16;
  const int chunks = ec::ceil_div(R, ec::LayerNormTraits::kFusedRowChunk);
  std::vector<float> partial = f32_poison(ec::layernorm_scratch_floats(R, C));
  std::vector<float> sh(kShared + kGuard);
  HostBlock<kThreads>* block = &host_block<kThreads>();
  bool ok = true;
  for (int chunk = 0; chunk < chunks; ++chunk) {
    const auto thread_body = [&](int t) {
      const int warp_id = t / 32, lane = t % 32;
      ec::layernorm_detail::backward_fused_block<kCols>(
          partial.data(), sh.data(), dinp.data(), dout.data(), inp.data(), w.data(), mean.data(), rstd.data(), chunk,
          warp_id, lane, R, C, FiberWarp<kThreads>{block, t}, FiberBlockSync<kThreads>{block, t});
    };
    ok = run_host_block<kThreads>(chunk, sh, kShared, thread_body) && ok;
  }
  for (int c = 0; c < C; ++c) ec::layernorm_detail::reduce_chunks_column(dw.data(), db.data(), partial.data(), chunks, C, c);
  return ok;
}

// layernorm_backward<bf16>'s choice of instantiation
bool emulate_layernorm_backward_bf16(std::vector<float>& dinp, std::vector<float>& dw, std::vector<float>& db,
                                     const std::vector<bf16>& dout, const std::vector<float>& inp,
                                     const std::vector<float>& w, const std::vector<float>& mean,
                                     const std::vector<float>& rstd, int R, int C) {
  switch (ec::layernorm_fused_columns_per_lane(C)) {
    case 2: return emulate_layernorm_backward_fused<2>(dinp, dw, db, dout, inp, w, mean, rstd, R, C);
    case 8: return emulate_layernorm_backward_fused<8>(dinp, dw, db, dout, inp, w, mean, rstd, R, C);
    case 16: return emulate_layernorm_backward_fused<16>(dinp, dw, db, dout, inp, w, mean, rstd, R, C);
    case 24: return emulate_layernorm_backward_fused<24>(dinp, dw, db, dout, inp, w, mean, rstd, R, C);
    case ec::LayerNormTraits::kFusedMaxColumnsPerLane:
      return emulate_layernorm_backward_fused<ec::LayerNormTraits::kFusedMaxColumnsPerLane>(dinp, dw, db, dout, inp, w,
                                                                                            mean, rstd, R, C);
    default: return false;
  }
}

// The fused backward (bf16 dout) against the three kernels on the same bf16 dout: dinp the same
// bits (the same row math), dw/db within a tight bound of a double reference (they are summed in
// another order), the same bits on a second run.
void check_layernorm_fused(int R, int C) {
  const std::string shape = "R=" + std::to_string(R) + " C=" + std::to_string(C);
  const auto inp = random_vector((size_t)R * C, 61 + C, 2.f);
  const auto w = random_vector(C, 62 + C, 1.5f);
  std::vector<float> mean(R), rstd(R);
  for (int r = 0; r < R; ++r) {  // the statistics as the forward computes them, in double here
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += inp[(size_t)r * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (inp[(size_t)r * C + c] - m) * (inp[(size_t)r * C + c] - m);
    mean[r] = (float)m;
    rstd[r] = (float)(1 / std::sqrt(v / C + 1e-6));
  }
  const Bf16Input dout((size_t)R * C, 63 + C, 1.f);
  const auto dinp0 = random_vector((size_t)R * C, 64 + C, 0.3f);
  const auto dw0 = random_vector(C, 65 + C, 0.3f), db0 = random_vector(C, 66 + C, 0.3f);
  std::vector<float> dinp3 = dinp0, dw3 = dw0, db3 = db0;
  bool ok = emulate_layernorm_backward(dinp3, dw3, db3, dout.narrow, inp, w, mean, rstd, R, C);
  std::vector<float> dinpf = dinp0, dwf = dw0, dbf = db0, dinpf2 = dinp0, dwf2 = dw0, dbf2 = db0;
  ok = emulate_layernorm_backward_bf16(dinpf, dwf, dbf, dout.narrow, inp, w, mean, rstd, R, C) && ok;
  ok = emulate_layernorm_backward_bf16(dinpf2, dwf2, dbf2, dout.narrow, inp, w, mean, rstd, R, C) && ok;
  report(ok, "layernorm fused backward " + shape + ": barriers");
  report(same_bits(dinpf, dinp3), "layernorm fused backward " + shape + ": dinp = the three-kernel dinp bit for bit");
  report(same_bits(dinpf2, dinpf) && same_bits(dwf2, dwf) && same_bits(dbf2, dbf),
         "layernorm fused backward " + shape + ": deterministic (two runs, the same bits)");
  // |error| against the double sums, relative to Σ |terms| (what a float sum in any order is bounded by)
  double worst = 0, worst3 = 0;
  for (int c = 0; c < C; ++c) {
    double sw = dw0[c], sb = db0[c], aw = std::fabs(dw0[c]), ab = std::fabs(db0[c]);
    for (int r = 0; r < R; ++r) {
      const double g = dout.wide[(size_t)r * C + c];
      const double t = g * (inp[(size_t)r * C + c] - mean[r]) * rstd[r];
      sw += t;
      sb += g;
      aw += std::fabs(t);
      ab += std::fabs(g);
    }
    worst = std::max({worst, std::fabs(dwf[c] - sw) / aw, std::fabs(dbf[c] - sb) / ab});
    worst3 = std::max({worst3, std::fabs(dw3[c] - sw) / aw, std::fabs(db3[c] - sb) / ab});
  }
  report(worst < 1e-6, "layernorm fused backward " + shape + ": dw, db vs double reference, max error " + sci(worst) +
                           " of Σ|terms| (three kernels: " + sci(worst3) + ")");
}

void check_layernorm(int R, int C) {
  const std::string shape = "R=" + std::to_string(R) + " C=" + std::to_string(C);
  const float eps = 1e-6f;
  const auto inp = random_vector((size_t)R * C, 11 + C, 2.f);
  const auto w = random_vector(C, 12 + C, 1.5f), b = random_vector(C, 13 + C, 0.5f);

  // forward: out bf16 vs fp32
  std::vector<float> out32 = f32_poison((size_t)R * C), mean32 = f32_poison(R), rstd32 = f32_poison(R);
  std::vector<bf16> out16 = bf16_poison((size_t)R * C);
  std::vector<float> mean16 = f32_poison(R), rstd16 = f32_poison(R);
  bool ok = emulate_layernorm_forward(out32, mean32, rstd32, inp, w, b, R, C, eps);
  ok = emulate_layernorm_forward(out16, mean16, rstd16, inp, w, b, R, C, eps) && ok;
  report(ok, "layernorm forward " + shape + ": barriers");
  report(rounded_equal(out16, out32), "layernorm forward " + shape + ": bf16 out = fp32 out rounded");
  report(same_bits(mean16, mean32) && same_bits(rstd16, rstd32), "layernorm forward " + shape + ": mean, rstd the same bits");
  double worst = 0;  // the fp32 kernel against a double reference
  for (int r = 0; r < R; ++r) {
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += inp[(size_t)r * C + c];
    m /= C;
    for (int c = 0; c < C; ++c) v += (inp[(size_t)r * C + c] - m) * (inp[(size_t)r * C + c] - m);
    const double rs = 1 / std::sqrt(v / C + eps);
    for (int c = 0; c < C; ++c)
      worst = std::max(worst, std::fabs(out32[(size_t)r * C + c] - ((inp[(size_t)r * C + c] - m) * rs * w[c] + b[c])));
  }
  report(worst < 1e-4, "layernorm forward " + shape + ": fp32 vs double reference, max error " + std::to_string(worst));

  // backward: dout bf16 vs the same values in fp32; dinp, dw, db accumulate onto random values
  const Bf16Input dout(((size_t)R * C), 14 + C, 1.f);
  const auto dinp0 = random_vector((size_t)R * C, 15 + C, 0.3f);
  const auto dw0 = random_vector(C, 16 + C, 0.3f), db0 = random_vector(C, 17 + C, 0.3f);
  std::vector<float> dinp32 = dinp0, dw32 = dw0, db32 = db0, dinp16 = dinp0, dw16 = dw0, db16 = db0;
  ok = emulate_layernorm_backward(dinp32, dw32, db32, dout.wide, inp, w, mean32, rstd32, R, C);
  ok = emulate_layernorm_backward(dinp16, dw16, db16, dout.narrow, inp, w, mean32, rstd32, R, C) && ok;
  report(ok, "layernorm backward " + shape + ": barriers");
  report(same_bits(dinp16, dinp32) && same_bits(dw16, dw32) && same_bits(db16, db32),
         "layernorm backward " + shape + ": bf16 dout gives the fp32 dinp, dw, db bit for bit");
  double worst_dw = 0, worst_dx = 0;  // the fp32 kernels against a double reference
  for (int c = 0; c < C; ++c) {
    double sw = dw0[c], sb = db0[c];
    for (int r = 0; r < R; ++r) {
      const double g = dout.wide[(size_t)r * C + c];
      sw += g * (inp[(size_t)r * C + c] - mean32[r]) * rstd32[r];
      sb += g;
    }
    worst_dw = std::max({worst_dw, std::fabs(dw32[c] - sw), std::fabs(db32[c] - sb)});
  }
  for (int r = 0; r < R; ++r) {
    double s_dn = 0, s_dnx = 0;
    for (int c = 0; c < C; ++c) {
      const double dn = (double)dout.wide[(size_t)r * C + c] * w[c];
      s_dn += dn;
      s_dnx += dn * (inp[(size_t)r * C + c] - mean32[r]) * rstd32[r];
    }
    for (int c = 0; c < C; ++c) {
      const double xh = (inp[(size_t)r * C + c] - mean32[r]) * (double)rstd32[r];
      const double ref = dinp0[(size_t)r * C + c] +
                         rstd32[r] * ((double)dout.wide[(size_t)r * C + c] * w[c] - s_dn / C - xh * s_dnx / C);
      worst_dx = std::max(worst_dx, std::fabs(dinp32[(size_t)r * C + c] - ref));
    }
  }
  report(worst_dw < 1e-3 && worst_dx < 1e-4, "layernorm backward " + shape + ": fp32 vs double reference, max error dw/db " +
                                                 std::to_string(worst_dw) + ", dinp " + std::to_string(worst_dx));
}

// ---- the losses ------------------------------------------------------------------------------

// loss_sums' kernels over their grids: the item kernel (blocks of kWarpsPerBlock warps of 32 fibers,
// the last block's warps past B·N included), the cls rows; item_sums (B·N, 2); false if the lanes
// diverged at a collective
template <class T>
bool emulate_loss_items(std::vector<T>& dpred, std::vector<double>& item_sums, const std::vector<T>& pred,
                        const std::vector<float>& target, const std::vector<int32_t>& position_of,
                        const PartGeometry& g, const ec::LossScales& scales, bool l1) {
  const int items = g.batch * g.num_patches, P = g.patch * g.patch * g.channels;
  constexpr int kThreads = 32 * ec::LossTraits::kWarpsPerBlock;
  HostBlock<kThreads>* host = &host_block<kThreads>();
  std::vector<float> no_smem;
  bool ok = true;
  for (int block = 0; block < ec::ceil_div(items, ec::LossTraits::kWarpsPerBlock); ++block) {
    const auto thread_body = [&](int t) {
      ec::loss_detail::item(dpred.data(), item_sums.data(), pred.data(), target.data(), position_of.data(), g,
                            scales.rec_scale, scales.con_scale, l1, block, t, FiberShflWarp<kThreads>{host, t});
    };
    ok = run_host_block<kThreads>(block, no_smem, 0, thread_body) && ok;
  }
  const long long cls = (long long)g.batch * g.parts * P;
  for (long long idx = 0; idx < cls; ++idx) ec::loss_detail::zero_cls_row_element(dpred.data(), g.num_patches, P, idx);
  return ok;
}

// loss_reduce_kernel's order (a host copy of it: the kernel is storage-independent): thread t of
// kReduceThreads sums items t, t + threads, ...; then the halving tree
std::pair<double, double> reduce_items_in_kernel_order(const std::vector<double>& item_sums) {
  const int threads = ec::LossTraits::kReduceThreads, items = (int)item_sums.size() / 2;
  std::vector<double> rec(threads, 0.0), con(threads, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int i = t; i < items; i += threads) {
      rec[t] += item_sums[2 * (size_t)i];
      con[t] += item_sums[2 * (size_t)i + 1];
    }
  for (int stride = threads / 2; stride > 0; stride >>= 1)
    for (int t = 0; t < stride; ++t) {
      rec[t] += rec[t + stride];
      con[t] += con[t + stride];
    }
  return {rec[0], con[0]};
}

struct LossCase {
  int batch, grid, patch, channels, parts_total, parts;
  bool l1, norm_pix;
  float lambda;
};

void check_loss(const LossCase& lc, uint64_t seed) {
  PartGeometry g{};
  g.batch = lc.batch;
  g.grid = lc.grid;
  g.num_patches = lc.grid * lc.grid;
  g.visible = g.num_patches / lc.parts_total;
  g.parts = lc.parts;
  g.patch = lc.patch;
  g.channels = lc.channels;
  g.image = lc.grid * lc.patch;
  const int B = g.batch, N = g.num_patches, K = g.parts, V = g.visible, P = g.patch * g.patch * g.channels;
  const std::string shape = "B=" + std::to_string(B) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + "/" +
                            std::to_string(lc.parts_total) + " P=" + std::to_string(P) + (lc.l1 ? " l1" : " mse") +
                            (lc.norm_pix ? " norm-pix" : "");

  // a seeded permutation per image and its inverse
  std::vector<int32_t> perm((size_t)B * N), position_of((size_t)B * N);
  for (int b = 0; b < B; ++b) {
    for (int n = 0; n < N; ++n) perm[(size_t)b * N + n] = n;
    for (int n = N - 1; n > 0; --n) {
      const int j = (int)(emae::dev::splitmix64(seed * 1000003 + b * 7919 + n) % (uint64_t)(n + 1));
      std::swap(perm[(size_t)b * N + n], perm[(size_t)b * N + j]);
    }
    for (int n = 0; n < N; ++n) position_of[(size_t)b * N + perm[(size_t)b * N + n]] = n;
  }
  // target (B, N, P): random patches, per patch normalized by mean and unbiased variance if norm_pix
  std::vector<float> target = random_vector((size_t)B * N * P, seed + 1, 1.f);
  if (lc.norm_pix)
    for (size_t item = 0; item < (size_t)B * N; ++item) {
      float* t = target.data() + item * P;
      double m = 0, ss = 0;
      for (int q = 0; q < P; ++q) m += t[q];
      m /= P;
      for (int q = 0; q < P; ++q) ss += (t[q] - m) * (t[q] - m);
      const double s = 1 / std::sqrt(ss / (P - 1) + 1e-6);
      for (int q = 0; q < P; ++q) t[q] = (float)((t[q] - m) * s);
    }
  // pred (S, 1+N, P) in bf16 and the same values in fp32; the cls rows hold values too (never read)
  const size_t npred = (size_t)B * K * (1 + N) * P;
  const Bf16Input pred(npred, seed + 2, 2.f);
  const ec::LossScales scales = ec::loss_scales(g, lc.lambda);

  std::vector<float> d32 = f32_poison(npred);
  std::vector<bf16> d16 = bf16_poison(npred);
  std::vector<double> sums32((size_t)2 * B * N, std::nan("")), sums16 = sums32;
  bool ok = emulate_loss_items(d32, sums32, pred.wide, target, position_of, g, scales, lc.l1);
  ok = emulate_loss_items(d16, sums16, pred.narrow, target, position_of, g, scales, lc.l1) && ok;
  report(ok, "loss " + shape + ": barriers");
  report(std::memcmp(sums16.data(), sums32.data(), sums32.size() * sizeof(double)) == 0,
         "loss " + shape + ": bf16 pred gives the fp32 item sums bit for bit");
  report(rounded_equal(d16, d32), "loss " + shape + ": bf16 dpred = fp32 dpred rounded");
  // (the item sums being equal, the loss values of bf16 pred are the fp32 ones: the reduction
  // and loss_values read nothing else)
  const auto [rec32, con32] = reduce_items_in_kernel_order(sums32);
  const emae::LossValues v32 = ec::loss_values(rec32, con32, scales.den.rec, scales.den.pairs, lc.lambda);

  // DESIGN.md §1 in double on the fp32 pred: recon over (b, k, n masked in k), consistency over the
  // ordered pairs (b, n, i ≠ j) masked in both, d′ only for the first member; cls rows get 0
  auto masked = [&](int b, int k, int n) {
    const int at = position_of[(size_t)b * N + n];
    return !(at >= k * V && at < (k + 1) * V);
  };
  auto y = [&](int b, int k, int n, int q) { return (double)pred.wide[(((size_t)b * K + k) * (1 + N) + 1 + n) * P + q]; };
  double rec = 0, con = 0, rec_count = 0, pair_count = 0;
  std::vector<double> dref(npred, 0.0);
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < K; ++i) {
        if (!masked(b, i, n)) continue;
        double e = 0;
        for (int q = 0; q < P; ++q) e += (y(b, i, n, q) - target[((size_t)b * N + n) * P + q]) * (y(b, i, n, q) - target[((size_t)b * N + n) * P + q]);
        rec += e / P;
        rec_count += 1;
        for (int j = 0; j < K; ++j) {
          if (j == i || !masked(b, j, n)) continue;
          double d = 0;
          for (int q = 0; q < P; ++q) d += lc.l1 ? std::fabs(y(b, i, n, q) - y(b, j, n, q)) : (y(b, i, n, q) - y(b, j, n, q)) * (y(b, i, n, q) - y(b, j, n, q));
          con += d / P;
          pair_count += 1;
        }
      }
  const double rec_ref = rec / rec_count, con_ref = pair_count > 0 ? con / pair_count : 0.0;
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < K; ++i) {
        if (!masked(b, i, n)) continue;
        for (int q = 0; q < P; ++q) {
          const double diff = y(b, i, n, q) - target[((size_t)b * N + n) * P + q];
          double grad = 2 * diff / (rec_count * P);
          for (int j = 0; j < K; ++j) {
            if (j == i || !masked(b, j, n)) continue;
            const double dij = y(b, i, n, q) - y(b, j, n, q);
            grad += lc.lambda * (lc.l1 ? (dij > 0 ? 1.0 : dij < 0 ? -1.0 : 0.0) : 2 * dij) / (pair_count * P);
          }
          dref[(((size_t)b * K + i) * (1 + N) + 1 + n) * P + q] = grad;
        }
      }
  auto rel = [](double a, double b) { return std::fabs(a - b) / std::max(1e-30, std::fabs(b)); };
  const double loss_ref = rec_ref + lc.lambda * con_ref;
  const bool values_ok = rel(v32.recon, rec_ref) < 1e-6 && (con_ref == 0 ? v32.consistency == 0 : rel(v32.consistency, con_ref) < 1e-6) &&
                         rel(v32.loss, loss_ref) < 1e-6;
  report(values_ok, "loss " + shape + ": fp32 values vs double reference, relative error recon " +
                        sci(rel(v32.recon, rec_ref)) + ", consistency " +
                        (con_ref == 0 ? std::string("0 (no pairs)") : sci(rel(v32.consistency, con_ref))));
  double scale = 0, worst = 0;
  for (size_t i = 0; i < npred; ++i) {
    scale = std::max(scale, std::fabs(dref[i]));
    worst = std::max(worst, std::fabs(d32[i] - dref[i]));  // NaN poison left anywhere fails below
  }
  bool zeros_ok = true;  // cls rows and each patch's row in the part where it is visible: exactly 0
  for (size_t i = 0; i < npred; ++i)
    if (dref[i] == 0 && !(d32[i] == 0 && float_from_bf16(bits(d16[i])) == 0)) {
      const size_t row = i / P;
      const int t = (int)(row % (1 + N));
      const int bk = (int)(row / (1 + N));
      if (t == 0 || !masked(bk / K, bk % K, t - 1)) zeros_ok = false;
    }
  bool finite = true;
  for (size_t i = 0; i < npred; ++i) finite = finite && std::isfinite(d32[i]);
  report(finite && zeros_ok && worst <= 1e-5 * scale,
         "loss " + shape + ": fp32 dpred vs double reference, max error " + sci(worst / scale) +
             " of the largest; cls and visible rows 0");
}

// ---- GELU and the flat conversion ----------------------------------------------------------------

void check_gelu(size_t n) {
  const Bf16Input inp(n, 21, 4.f), dout(n, 22, 1.f);
  std::vector<float> out32 = f32_poison(n);
  std::vector<bf16> out16 = bf16_poison(n);
  for (size_t i = 0; i < n; ++i) {
    ec::gelu_forward_element(out32.data(), inp.wide.data(), i);
    ec::gelu_forward_element(out16.data(), inp.narrow.data(), i);
  }
  report(rounded_equal(out16, out32), "gelu forward n=" + std::to_string(n) + ": bf16 = fp32 rounded");
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = inp.wide[i];
    worst = std::max(worst, std::fabs(out32[i] - 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)))));
  }
  report(worst < 1e-5, "gelu forward: fp32 vs double reference, max error " + std::to_string(worst));

  // backward in place (dinp aliases dout), as the MLP's backward calls it
  std::vector<float> d32 = dout.wide;
  std::vector<bf16> d16 = dout.narrow;
  for (size_t i = 0; i < n; ++i) {
    ec::gelu_backward_element(d32.data(), inp.wide.data(), d32.data(), i);
    ec::gelu_backward_element(d16.data(), inp.narrow.data(), d16.data(), i);
  }
  report(rounded_equal(d16, d32), "gelu backward n=" + std::to_string(n) + " (dinp = dout): bf16 = fp32 rounded");
  worst = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = inp.wide[i];
    const double grad = 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
    worst = std::max(worst, std::fabs(d32[i] - grad * dout.wide[i]));
  }
  report(worst < 1e-5, "gelu backward: fp32 vs double reference, max error " + std::to_string(worst));

  // the flat conversion: nearest even, as the host reference; NaN stays NaN, ±inf stay
  std::vector<float> src = random_vector(n, 23, 100.f);
  src[0] = std::nanf("");
  src[1] = INFINITY;
  src[2] = -INFINITY;
  src[3] = 1.00390625f;  // exactly halfway between two bf16 values: rounds to even (1.0)
  src[4] = 1.01171875f;  // halfway, rounds up to the even 1.015625
  std::vector<bf16> dst = bf16_poison(n + 1);
  const uint16_t sentinel = 0x1234;
  dst[n] = from_bits(sentinel);
  for (size_t i = 0; i < n; ++i) ec::convert_to_bf16_flat_element(dst.data(), src.data(), i);
  bool ok = bits(dst[n]) == sentinel && std::isnan(float_from_bf16(bits(dst[0])));
  for (size_t i = 1; i < n; ++i) ok = ok && bits(dst[i]) == bf16_from_float(src[i]);
  ok = ok && float_from_bf16(bits(dst[3])) == 1.f && float_from_bf16(bits(dst[4])) == 1.015625f;
  report(ok, "convert_to_bf16_flat n=" + std::to_string(n) + ": nearest even, NaN and inf kept, nothing past n written");
}

// ---- AdamW ---------------------------------------------------------------------------------------

// The launchers' grid: kBlocksPerSegment x-blocks of kThreads threads per segment.
struct HostGrid {
  unsigned bx, by, tx;
  unsigned block_x() const { return bx; }
  unsigned block_y() const { return by; }
  unsigned thread_x() const { return tx; }
  unsigned grid_x() const { return ec::OptimTraits::kBlocksPerSegment; }
  unsigned block_dim_x() const { return ec::OptimTraits::kThreads; }
};
template <class Body>
void run_adamw_grid(int count, Body body) {
  for (int by = 0; by < count; ++by)
    for (unsigned bx = 0; bx < (unsigned)ec::OptimTraits::kBlocksPerSegment; ++bx)
      for (unsigned tx = 0; tx < (unsigned)ec::OptimTraits::kThreads; ++tx) body(HostGrid{bx, (unsigned)by, tx});
}

struct AdamState {
  std::vector<float> params, grads, m, v;
  std::vector<bf16> params_bf16;
};

void check_adamw() {
  // three segments with a gap of frozen parameters between the first two (never written)
  const std::vector<ec::DeviceSegment> segs = {{0, 1000, 1, 1.0}, {1100, 37, 0, 0.65}, {1137, 20000, 1, 0.8}};
  const size_t total = 21137;
  emae::AdamWScalars s{1e-3f, 0.9f, 0.95f, 1e-8f, 0.05f, 1 - 0.9f * 0.9f, std::sqrt(1 - 0.95f * 0.95f)};
  const int count = (int)segs.size();
  const uint16_t sentinel = 0x1234;
  AdamState init{random_vector(total, 31, 1.f), random_vector(total, 32, 0.1f), random_vector(total, 33, 0.01f),
                 random_vector(total, 34, 0.001f), std::vector<bf16>(total, from_bits(sentinel))};
  for (float& x : init.v) x = std::fabs(x);
  auto in_segment = [&](size_t k) { return k < 1000 || k >= 1100; };

  // plain: without a copy (today's kernel) and with one
  AdamState plain = init, copy = init;
  run_adamw_grid(count, [&](const HostGrid& g) {
    ec::adamw_body<false>(plain.params.data(), plain.grads.data(), plain.m.data(), plain.v.data(), nullptr, segs.data(),
                          s, g);
  });
  run_adamw_grid(count, [&](const HostGrid& g) {
    ec::adamw_body<true>(copy.params.data(), copy.grads.data(), copy.m.data(), copy.v.data(), copy.params_bf16.data(),
                         segs.data(), s, g);
  });
  bool ok = same_bits(copy.params, plain.params) && same_bits(copy.m, plain.m) && same_bits(copy.v, plain.v) &&
            !same_bits(plain.params, init.params);
  report(ok, "adamw with params_bf16: params, m, v the same bits as without");
  ok = true;
  for (size_t k = 0; k < total; ++k)
    ok = ok && bits(copy.params_bf16[k]) == (in_segment(k) ? bf16_from_float(copy.params[k]) : sentinel);
  report(ok, "adamw with params_bf16: the copy = the new params rounded over the segments, untouched elsewhere");

  // decided on the device: clipped, and refused
  const emae::StepDecision clip{1, 1, 0.37f}, refuse{0, 0, 1.f};
  AdamState clip_plain = init, clip_copy = init, refused = init;
  run_adamw_grid(count, [&](const HostGrid& g) {
    ec::adamw_decided_body<false>(clip_plain.params.data(), clip_plain.grads.data(), clip_plain.m.data(),
                                  clip_plain.v.data(), nullptr, segs.data(), s, &clip, g);
    ec::adamw_decided_body<true>(clip_copy.params.data(), clip_copy.grads.data(), clip_copy.m.data(),
                                 clip_copy.v.data(), clip_copy.params_bf16.data(), segs.data(), s, &clip, g);
    ec::adamw_decided_body<true>(refused.params.data(), refused.grads.data(), refused.m.data(), refused.v.data(),
                                 refused.params_bf16.data(), segs.data(), s, &refuse, g);
  });
  ok = same_bits(clip_copy.params, clip_plain.params) && same_bits(clip_copy.grads, clip_plain.grads) &&
       same_bits(clip_copy.m, clip_plain.m) && same_bits(clip_copy.v, clip_plain.v) &&
       !same_bits(clip_plain.grads, init.grads);
  for (size_t k = 0; k < total; ++k)
    ok = ok && bits(clip_copy.params_bf16[k]) == (in_segment(k) ? bf16_from_float(clip_copy.params[k]) : sentinel);
  report(ok, "adamw_decided, clipped, with params_bf16: the fp32 state as without, the copy the new params rounded");
  ok = same_bits(refused.params, init.params) && same_bits(refused.grads, init.grads) &&
       same_bits(refused.m, init.m) && same_bits(refused.v, init.v);
  for (size_t k = 0; k < total; ++k) ok = ok && bits(refused.params_bf16[k]) == sentinel;
  report(ok, "adamw_decided, refused: nothing changes, the bf16 copy included");
}

// ---- patches and tokens ------------------------------------------------------------------------

void check_tokens() {
  PartGeometry g{};
  g.batch = 2, g.parts = 3, g.visible = 4, g.grid = 4, g.num_patches = 16, g.patch = 2, g.channels = 3, g.image = 8;
  const int B = g.batch, K = g.parts, V = g.visible, N = g.num_patches, S = B * K, P = g.patch * g.patch * g.channels;
  const int D = 40, Dd = 24;
  // perm: a shuffled 0..N−1 per image (K·V = 12 < N: some patches in no part); position_of its inverse
  std::vector<int32_t> perm(B * N), position_of(B * N);
  for (int b = 0; b < B; ++b) {
    for (int n = 0; n < N; ++n) perm[b * N + n] = (n * 7 + 3 * b + 5) % N;
    for (int i = 0; i < N; ++i) position_of[b * N + perm[b * N + i]] = i;
  }
  const auto images = random_vector((size_t)B * g.channels * g.image * g.image, 41, 1.f);

  // gather_visible_patches: cols (S·V, P)
  const size_t ncols = (size_t)S * V * P;
  std::vector<float> cols32 = f32_poison(ncols);
  std::vector<bf16> cols16 = bf16_poison(ncols);
  for (size_t i = 0; i < ncols; ++i) {
    ec::gather_visible_patches_element(cols32.data(), images.data(), perm.data(), g, (long long)i);
    ec::gather_visible_patches_element(cols16.data(), images.data(), perm.data(), g, (long long)i);
  }
  bool ok = true;  // fp32 against the layout of the contract: (c, row, col) of patch perm[b, k·V + v]
  for (int b = 0; b < B; ++b)
    for (int kv = 0; kv < K * V; ++kv)
      for (int e = 0; e < P; ++e) {
        const int c = e / (g.patch * g.patch), i = (e / g.patch) % g.patch, j = e % g.patch;
        const int n = perm[b * N + kv], gy = n / g.grid, gx = n % g.grid;
        const float want = images[(((size_t)b * g.channels + c) * g.image + gy * g.patch + i) * g.image + gx * g.patch + j];
        ok = ok && cols32[((size_t)b * K * V + kv) * P + e] == want;
      }
  report(ok, "gather_visible_patches fp32: the contract's layout");
  report(rounded_equal(cols16, cols32), "gather_visible_patches: bf16 = fp32 rounded");

  // encoder_tokens_forward: x (S, 1+V, D) from emb (S·V, D) bf16
  const Bf16Input emb((size_t)S * V * D, 42, 1.f);
  const auto cls = random_vector(D, 43, 0.1f), pos = random_vector((size_t)(1 + N) * D, 44, 1.f);
  const size_t nx = (size_t)S * (1 + V) * D;
  std::vector<float> x32 = f32_poison(nx), x16 = f32_poison(nx);
  for (size_t i = 0; i < nx; ++i) {
    ec::encoder_tokens_forward_element(x32.data(), emb.wide.data(), cls.data(), pos.data(), perm.data(), g, D, (long long)i);
    ec::encoder_tokens_forward_element(x16.data(), emb.narrow.data(), cls.data(), pos.data(), perm.data(), g, D,
                                       (long long)i);
  }
  ok = true;
  for (int bk = 0; bk < S; ++bk)
    for (int t = 0; t <= V; ++t)
      for (int d = 0; d < D; ++d) {
        const int b = bk / K, k = bk % K;
        const float want = t == 0 ? cls[d] + pos[d]
                                  : emb.wide[((size_t)bk * V + t - 1) * D + d] + pos[(size_t)(1 + perm[b * N + k * V + t - 1]) * D + d];
        ok = ok && x32[((size_t)bk * (1 + V) + t) * D + d] == want;
      }
  report(ok, "encoder_tokens_forward fp32: cls + pos[0], emb + pos[1 + perm]");
  report(same_bits(x16, x32), "encoder_tokens_forward: bf16 emb gives the fp32 x bit for bit");

  // encoder_tokens_backward: demb (S·V, D) from dx (S, 1+V, D)
  const auto dx = random_vector(nx, 45, 1.f);
  const size_t nemb = (size_t)S * V * D;
  std::vector<float> demb32 = f32_poison(nemb);
  std::vector<bf16> demb16 = bf16_poison(nemb);
  for (size_t i = 0; i < nemb; ++i) {
    ec::encoder_tokens_backward_element(demb32.data(), dx.data(), g, D, (long long)i);
    ec::encoder_tokens_backward_element(demb16.data(), dx.data(), g, D, (long long)i);
  }
  ok = true;
  for (int bk = 0; bk < S; ++bk)
    for (int v = 0; v < V; ++v)
      for (int d = 0; d < D; ++d)
        ok = ok && demb32[((size_t)bk * V + v) * D + d] == dx[((size_t)bk * (1 + V) + 1 + v) * D + d];
  report(ok, "encoder_tokens_backward fp32: demb = dx's token rows");
  report(rounded_equal(demb16, demb32), "encoder_tokens_backward: bf16 demb = fp32 rounded");

  // decoder_tokens_forward: z (S, 1+N, Dd) from y (S, 1+V, Dd) bf16
  const Bf16Input y((size_t)S * (1 + V) * Dd, 46, 1.f);
  const auto mask = random_vector(Dd, 47, 0.1f), dpos = random_vector((size_t)(1 + N) * Dd, 48, 1.f);
  const size_t nz = (size_t)S * (1 + N) * Dd;
  std::vector<float> z32 = f32_poison(nz), z16 = f32_poison(nz);
  for (size_t i = 0; i < nz; ++i) {
    ec::decoder_tokens_forward_element(z32.data(), y.wide.data(), mask.data(), dpos.data(), position_of.data(), g, Dd,
                                       (long long)i);
    ec::decoder_tokens_forward_element(z16.data(), y.narrow.data(), mask.data(), dpos.data(), position_of.data(), g, Dd,
                                       (long long)i);
  }
  ok = true;
  for (int bk = 0; bk < S; ++bk)
    for (int t = 0; t <= N; ++t)
      for (int d = 0; d < Dd; ++d) {
        const int b = bk / K, k = bk % K;
        float value = y.wide[(size_t)bk * (1 + V) * Dd + d];
        if (t > 0) {
          const int at = position_of[b * N + t - 1];
          value = at >= k * V && at < (k + 1) * V ? y.wide[((size_t)bk * (1 + V) + 1 + at - k * V) * Dd + d] : mask[d];
        }
        ok = ok && z32[((size_t)bk * (1 + N) + t) * Dd + d] == value + dpos[(size_t)t * Dd + d];
      }
  report(ok, "decoder_tokens_forward fp32: y at the visible positions, mask_token elsewhere, + dpos");
  report(same_bits(z16, z32), "decoder_tokens_forward: bf16 y gives the fp32 z bit for bit");

  // decoder_tokens_backward: dy (S, 1+V, Dd) from dz (S, 1+N, Dd)
  const auto dz = random_vector(nz, 49, 1.f);
  const size_t ny = (size_t)S * (1 + V) * Dd;
  std::vector<float> dy32 = f32_poison(ny);
  std::vector<bf16> dy16 = bf16_poison(ny);
  for (size_t i = 0; i < ny; ++i) {
    ec::decoder_tokens_backward_element(dy32.data(), dz.data(), perm.data(), g, Dd, (long long)i);
    ec::decoder_tokens_backward_element(dy16.data(), dz.data(), perm.data(), g, Dd, (long long)i);
  }
  ok = true;
  for (int bk = 0; bk < S; ++bk)
    for (int t = 0; t <= V; ++t)
      for (int d = 0; d < Dd; ++d) {
        const int b = bk / K, k = bk % K;
        const int src = t == 0 ? 0 : 1 + perm[b * N + k * V + t - 1];
        ok = ok && dy32[((size_t)bk * (1 + V) + t) * Dd + d] == dz[((size_t)bk * (1 + N) + src) * Dd + d];
      }
  report(ok, "decoder_tokens_backward fp32: dy = dz's cls and visible rows");
  report(rounded_equal(dy16, dy32), "decoder_tokens_backward: bf16 dy = fp32 rounded");
}

}  // namespace

// Never called: makes nvcc compile every launcher's device kernels for both storage types, so the
// build of this emulator is also a compile check of the bf16 instantiations.
template <class T>
void instantiate_launchers(T* t, float* f, bf16* pb, const int32_t* p, const PartGeometry& g, ec::DeviceSegment* segs,
                           const emae::AdamWScalars& s, const emae::StepStatus* st, emae::StepDecision* dec,
                           cudaStream_t stream) {
  ec::layernorm_forward(t, f, f, f, f, f, 1, 1, 1e-6f, stream);
  ec::layernorm_backward(f, f, f, (const T*)t, f, f, f, f, 1, 1, f, stream);
  ec::gelu_forward(t, (const T*)t, 1, stream);
  ec::gelu_backward(t, (const T*)t, (const T*)t, 1, stream);
  ec::gather_visible_patches(t, f, p, g, stream);
  ec::encoder_tokens_forward(f, (const T*)t, f, f, p, g, 1, stream);
  ec::encoder_tokens_backward(t, f, f, g, 1, f, stream);
  ec::decoder_tokens_forward(f, (const T*)t, f, f, p, g, 1, stream);
  ec::decoder_tokens_backward(t, f, f, p, p, g, 1, f, stream);
  ec::adamw(f, f, f, f, pb, segs, 1, s, stream);
  ec::adamw_decided(f, f, f, f, pb, segs, 1, s, st, 1.f, true, dec, stream);
  ec::convert_to_bf16_flat(pb, f, 1, stream);
  emae::LossValues* lv = nullptr;
  ec::loss_forward_backward(t, (const T*)t, f, p, g, 1.f, false, (double*)f, stream);
  ec::loss_forward_backward_into(lv, t, (const T*)t, f, p, g, 1.f, false, (double*)f, stream);
}
template void instantiate_launchers<float>(float*, float*, bf16*, const int32_t*, const PartGeometry&,
                                           ec::DeviceSegment*, const emae::AdamWScalars&, const emae::StepStatus*,
                                           emae::StepDecision*, cudaStream_t);
template void instantiate_launchers<bf16>(bf16*, float*, bf16*, const int32_t*, const PartGeometry&,
                                          ec::DeviceSegment*, const emae::AdamWScalars&, const emae::StepStatus*,
                                          emae::StepDecision*, cudaStream_t);

int main() {
  check_layernorm(37, 200);  // C not a multiple of 32: lanes with fewer columns
  check_layernorm(260, 33);  // two row chunks in the parameter sums
  // the fused backward of bf16 dout: odd R (one partial block, several), C one warp wide, odd, ViT-B's
  for (int C : {32, 37, 768})
    for (int R : {1, 7, 300, 3000}) check_layernorm_fused(R, C);
  check_layernorm_fused(5, 1000);  // the widest instantiation
  check_layernorm_fused(300, 192);  // the presets' widths: 8 and 16 columns per lane
  check_layernorm_fused(300, 384);
  {
    bool ok = true;  // the instantiation per C, and the three kernels past it
    for (int C : {1, 64, 65, 256, 257, 512, 768, 769, 1280})
      ok = ok && ec::layernorm_fused_columns_per_lane(C) * 32 >= C;
    ok = ok && ec::layernorm_fused_columns_per_lane(64) == 2 && ec::layernorm_fused_columns_per_lane(768) == 24 &&
         ec::layernorm_fused_columns_per_lane(1281) == 0;
    ok = ok && ec::layernorm_scratch_floats(300, 37) >= (size_t)ec::ceil_div(300, ec::LayerNormTraits::kFusedRowChunk) * 2 * 37 &&
         ec::layernorm_scratch_floats(300, 37) >= (size_t)ec::ceil_div(300, ec::LayerNormTraits::kRowChunk) * 2 * 37;
    report(ok, "layernorm fused backward: columns per lane cover C (C > 1280: three kernels), scratch holds either path's partials");
  }
  // (batch, grid, patch, channels, K_total, K, l1, norm_pix, λ): P = 12, 27, 49, 48, 75 (lanes with
  // fewer elements, P < 32 and not a multiple of 32); K < K_total leaves patches visible nowhere;
  // K = 1 has no pairs; B·N not a multiple of the block's 8 warps
  check_loss({2, 4, 2, 3, 4, 4, false, true, 1.f}, 101);
  check_loss({3, 4, 3, 3, 4, 3, true, false, 1.f}, 102);
  check_loss({1, 5, 7, 1, 5, 2, false, true, 0.5f}, 103);
  check_loss({2, 4, 4, 3, 4, 1, false, true, 1.f}, 104);
  check_loss({3, 3, 5, 3, 3, 3, true, true, 0.5f}, 105);
  check_gelu(4099);
  check_adamw();
  check_tokens();
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
