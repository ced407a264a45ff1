// CPU emulation of cuda/attention_tc.cuh (no GPU needed): runs the header's own kernel bodies
// (forward_body, backward_q_body, backward_kv_body) on the host, one block at a time, with the
// 128 threads of a block as cooperative fibers (ucontext) and the warp-collective operations
// emulated from the PTX ISA's definitions — not from the header's index functions:
//   ldmatrix.x4[.trans] (lanes 8j..8j+7 address the rows of matrix j; register j of lane l holds
//   row l/4, elements 2(l%4), 2(l%4)+1 of matrix j, or of its transpose), mma.m16n8k16.row.col
//   bf16 → fp32 (A, B, C fragment layouts of the ISA; products summed in double), shfl.xor,
//   bar.sync. The launch geometry comes from the header's attention_tc_plan / attention_tc_params.
// Checked per case against a double-precision reference (as attention_check.cu): out, lse, dq, dk,
// dv within a bf16 tolerance; cases run with fp32 storage and with bf16 storage (qkv, dout, out,
// dqkv bf16: the reference is computed on the bf16-rounded inputs, the backward is fed the bf16
// rounding of the reference out); every output written (NaN-poisoned before), guard cells after every
// buffer untouched; shared memory is NaN-poisoned per block so reading an unstaged row shows up;
// ldmatrix addresses must be 16-byte aligned and inside the block's dynamic shared memory; every
// collective must be reached by all 32 lanes of a warp with the same operation, and every barrier
// by all 128 threads (else: divergence or deadlock is reported). The scheduler runs one warp as far
// as it goes before the next (warp order shuffled per barrier phase), so a missing barrier lets a
// warp read rows other warps have not staged yet, or overwrite rows they still read.
//   nvcc -std=c++17 -O2 --expt-relaxed-constexpr -arch=sm_80 -I. -Inative cuda/dev/attention_tc_emulate.cu \
//     -o /tmp/attention_tc_emulate   (the device code is compiled but never run)
//   /tmp/attention_tc_emulate [--quick]
// Mutation check (issue 12): 22 deliberate one-line faults in the header (no rescale of the running
// output or sum, rescale without log2e·scale, mask off by one, ldmatrix matrix order, C→A register
// order, missing barriers, pad rows not zero-filled, chunks staged once, dk without scale, D without
// its quad sum, wrong quad lanes, rounds on the wrong rows, A-fragment rows swapped, a warp skipping
// a barrier): the 20 real faults each make this program fail; the 2 equivalent ones pass, as they
// should (dropping the query kernel's key mask: the zero k rows add nothing; D = 1 on padded
// queries: their p is 0).
// Exit status non-zero on any FAIL.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/attention_tc.cuh"
#include "cuda/dev/attention_reference.h"
#include "cuda/dev/check_common.h"
#include "cuda/dev/fiber_block.h"
#include "cuda/dev/host_buffer.h"

namespace {

using namespace emae::dev;
using emae::cuda::AttentionTcParams;
using emae::DType;
using emae::cuda::AttentionTcPlan;
using bf16_t = __nv_bfloat16;

float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float lo_half(uint32_t r) { return bf16_bits_to_float((uint16_t)(r & 0xffffu)); }
float hi_half(uint32_t r) { return bf16_bits_to_float((uint16_t)(r >> 16)); }

enum class Op { kRun, kSync, kShfl, kLdsm, kLdsmT, kMma, kDone };
const char* op_name(Op op) {
  switch (op) {
    case Op::kRun: return "run";
    case Op::kSync: return "bar.sync";
    case Op::kShfl: return "shfl.xor";
    case Op::kLdsm: return "ldmatrix";
    case Op::kLdsmT: return "ldmatrix.trans";
    case Op::kMma: return "mma";
    case Op::kDone: return "exit";
  }
  return "?";
}

constexpr size_t kSmemGuard = 256;

// a thread's operands and results of the warp collectives
struct Thread {
  float f = 0.f, f_out = 0.f;
  int mask = 0;
  const unsigned char* addr = nullptr;
  uint32_t a[4] = {}, b[2] = {}, r[4] = {};
  float c[4] = {}, d[4] = {};
};

// A block on the fiber scheduler (fiber_block.h), completing shfl.xor, ldmatrix and mma.
class BlockEmulator : public FiberBlock<Op, Thread> {
 public:
  std::vector<unsigned char> smem;  // dynamic shared memory + guard
  size_t smem_bytes = 0;

  // runs body(tid) for every thread of block (bx, by) with `bytes` of dynamic shared memory
  void run(int bx_, int by_, size_t bytes, std::function<void(int)> body) {
    smem_bytes = bytes;
    smem.resize(bytes + kSmemGuard);
    run_block(bx_, by_, smem.data(), smem.size(), bytes, std::move(body));
  }

 private:
  void check_row_address(const unsigned char* p, int lane) const {
    const unsigned char* base = smem.data();
    if (p < base || p + 16 > base + smem_bytes)
      throw EmulationError("ldmatrix: lane " + std::to_string(lane) + " row address outside the dynamic shared memory");
    if ((p - base) % 16) throw EmulationError("ldmatrix: row address not 16-byte aligned");
  }

  uint16_t row_element(int lane_of_row, int e) const {  // element e of the 8-element row a lane addresses
    uint16_t v;
    std::memcpy(&v, thread_at(lane_of_row).addr + 2 * e, 2);
    return v;
  }
  const Thread& thread_at(int lane) const { return t[32 * warp_ + lane]; }

  void complete(int w, Op op) override {
    warp_ = w;
    Thread* lanes = &t[32 * w];
    switch (op) {
      case Op::kShfl:
        for (int l = 0; l < 32; ++l) {
          if (lanes[l].mask != lanes[0].mask) throw EmulationError("shfl.xor: lanes disagree on the mask");
          lanes[l].f_out = lanes[l ^ lanes[l].mask].f;
        }
        break;
      case Op::kLdsm:
      case Op::kLdsmT:
        for (int l = 0; l < 32; ++l) check_row_address(lanes[l].addr, l);
        for (int l = 0; l < 32; ++l)
          for (int j = 0; j < 4; ++j) {
            uint16_t lo, hi;
            if (op == Op::kLdsm) {  // row l/4 of matrix j, elements 2(l%4), 2(l%4)+1
              lo = row_element(8 * j + l / 4, 2 * (l % 4));
              hi = row_element(8 * j + l / 4, 2 * (l % 4) + 1);
            } else {  // transposed: rows 2(l%4), 2(l%4)+1 of matrix j, element l/4
              lo = row_element(8 * j + 2 * (l % 4), l / 4);
              hi = row_element(8 * j + 2 * (l % 4) + 1, l / 4);
            }
            lanes[l].r[j] = (uint32_t)lo | (uint32_t)hi << 16;
          }
        break;
      case Op::kMma: {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, tq = l % 4;
          for (int ra = 0; ra < 4; ++ra) {  // a0..a7: (g, 2t..), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)
            const int row = g + 8 * (ra % 2), col = 2 * tq + 8 * (ra / 2);
            A[row][col] = lo_half(lanes[l].a[ra]);
            A[row][col + 1] = hi_half(lanes[l].a[ra]);
          }
          for (int rb = 0; rb < 2; ++rb) {  // b0..b3: (k 2t.., n g), (k 2t+8.., n g)
            const int k = 2 * tq + 8 * rb;
            B[k][g] = lo_half(lanes[l].b[rb]);
            B[k + 1][g] = hi_half(lanes[l].b[rb]);
          }
          for (int r = 0; r < 4; ++r) C[g + 8 * (r / 2)][2 * tq + r % 2] = lanes[l].c[r];
        }
        for (int l = 0; l < 32; ++l) {
          const int g = l / 4, tq = l % 4;
          for (int r = 0; r < 4; ++r) {
            const int row = g + 8 * (r / 2), col = 2 * tq + r % 2;
            double acc = C[row][col];
            for (int k = 0; k < 16; ++k) acc += (double)A[row][k] * (double)B[k][col];
            lanes[l].d[r] = (float)acc;
          }
        }
        break;
      }
      default: throw EmulationError(std::string("unexpected collective ") + op_name(op));
    }
  }

  int warp_ = 0;
};

// The Ops policy of the kernel bodies, on the emulator.
struct HostOps {
  BlockEmulator* emu;
  int tid;
  int thread() const { return tid; }
  int block_x() const { return emu->bx; }
  int block_y() const { return emu->by; }
  unsigned char* smem() const { return emu->smem.data(); }
  void sync() const { emu->wait(tid, Op::kSync); }
  float shfl_xor(float v, int mask) const {
    Thread& th = emu->t[tid];
    th.f = v;
    th.mask = mask;
    emu->wait(tid, Op::kShfl);
    return th.f_out;
  }
  void ldsm(uint32_t (&r)[4], const bf16_t* p) const { load(r, p, Op::kLdsm); }
  void ldsm_t(uint32_t (&r)[4], const bf16_t* p) const { load(r, p, Op::kLdsmT); }
  void load(uint32_t (&r)[4], const bf16_t* p, Op op) const {
    Thread& th = emu->t[tid];
    th.addr = reinterpret_cast<const unsigned char*>(p);
    emu->wait(tid, op);
    for (int j = 0; j < 4; ++j) r[j] = th.r[j];
  }
  void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) const {
    Thread& th = emu->t[tid];
    for (int j = 0; j < 4; ++j) th.a[j] = a[j], th.c[j] = d[j];
    th.b[0] = b0;
    th.b[1] = b1;
    emu->wait(tid, Op::kMma);
    for (int j = 0; j < 4; ++j) d[j] = th.d[j];
  }
};

// ---- inputs, reference -----------------------------------------------------------------------


// ---- one case ----------------------------------------------------------------------------------

// Tolerances (as attention_check.cu): u = 2^-8, bf16's unit roundoff. Rounding q and k perturbs a
// score by ~u·|s|, so the probabilities carry a relative error growing with the logit scale σ (the
// RMS score); P and dS are rounded once more for the second products. out, lse: u·(1 + σ);
// dq, dk, dv: 2u·(1 + σ) (unit-scale inputs, σ ≈ 0.33: 5e-3 and 1e-2, about 3× the errors seen).
// With bf16 storage the inputs are exact bf16 (the reference sees the same values), so the scores
// are exact products summed in fp32 and lse is an fp32 result: 1e-5·max(1, σ/3), the fp32 SIMT
// path's tolerance; out and the gradients keep the bounds above (P and dS are still rounded, and
// each output once more on store, ≤ u/2 relative). The table: attention_reference.h.

struct Case {
  Shape shape;
  float amp;
  size_t offset;  // elements past an aligned allocation, for every buffer
  const char* note;
  DType storage = DType::kF32;  // of qkv, dout, out, dqkv
};

template <int kD, class Elem>
void run_grid(const AttentionTcParams<Elem>& p, int which, BlockEmulator& emu) {
  const AttentionTcPlan plan = emae::cuda::attention_tc_plan<kD>(p.T);
  const size_t bytes = which == 0 ? plan.smem_fwd : which == 1 ? plan.smem_q : plan.smem_kv;
  for (int by = 0; by < plan.grid_y; ++by)
    for (int bx = 0; bx < p.S * p.H; ++bx)
      emu.run(bx, by, bytes, [&](int tid) {
        HostOps ops{&emu, tid};
        namespace d = emae::cuda::attention_tc_detail;
        if (which == 0) d::forward_body<kD>(p, ops);
        else if (which == 1) d::backward_q_body<kD>(p, ops);
        else d::backward_kv_body<kD>(p, ops);
      });
}

bool aligned16(const void* p) { return ((uintptr_t)p & 15) == 0; }

template <int kD, class Elem>
int run_case(const Case& c, uint64_t seed, BlockEmulator& emu) {
  const Shape& sh = c.shape;
  const int S = sh.S, T = sh.T, H = sh.H, D = H * kD;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D, n_lse = (size_t)S * H * T;
  // the inputs as stored: the reference sees what the kernels read
  const std::vector<float> qkv = rounded<Elem>(random_vector(n_qkv, seed, c.amp)),
                           dout = rounded<Elem>(random_vector(n_out, seed + 1, 1.f));
  const Reference ref = reference(qkv, dout, sh);
  HostBuffer<Elem> b_qkv(n_qkv, c.offset), b_dout(n_out, c.offset), b_out(n_out, c.offset), b_dqkv(n_qkv, c.offset);
  HostBuffer<float> b_lse(n_lse, c.offset), b_delta(n_lse, c.offset);
  b_qkv.fill(qkv);
  b_dout.fill(dout);

  AttentionTcParams<Elem> p = emae::cuda::attention_tc_params<Elem>(S, T, H, kD);
  p.qkv = b_qkv.data();
  p.out = b_out.data();
  p.lse = b_lse.data();
  p.vec = aligned16(p.qkv) && aligned16(p.out);  // as attention_tc_forward
  const long long before = emu.collectives;
  std::string error;
  double e_out = NAN, e_lse = NAN, e_dq = NAN, e_dk = NAN, e_dv = NAN;
  bool guards = true;
  try {
    run_grid<kD>(p, 0, emu);
    const auto all = [](size_t) { return true; };
    e_out = rel_l2(b_out.values(), ref.out, all);
    e_lse = rel_l2(b_lse.values(), ref.lse, all);
    // backward on the reference out (rounded to the storage type) and lse (to fp32), as attention_check.cu
    b_out.fill(std::vector<float>(ref.out.begin(), ref.out.end()));
    b_lse.fill(std::vector<float>(ref.lse.begin(), ref.lse.end()));
    AttentionTcParams<Elem> q = emae::cuda::attention_tc_params<Elem>(S, T, H, kD);
    q.qkv = b_qkv.data();
    q.dout = b_dout.data();
    q.out_fwd = b_out.data();
    q.lse_fwd = b_lse.data();
    q.dqkv = b_dqkv.data();
    q.delta = b_delta.data();
    q.vec = aligned16(q.qkv) && aligned16(q.dout) && aligned16(q.out_fwd) && aligned16(q.dqkv);
    run_grid<kD>(q, 1, emu);
    run_grid<kD>(q, 2, emu);
    const std::vector<float> dqkv = b_dqkv.values();
    const auto part = [D](int k) { return [D, k](size_t i) { return (int)(i % (3 * (size_t)D)) / D == k; }; };
    e_dq = rel_l2(dqkv, ref.dqkv, part(0));
    e_dk = rel_l2(dqkv, ref.dqkv, part(1));
    e_dv = rel_l2(dqkv, ref.dqkv, part(2));
    if (T == 1) {  // dq = dk = 0 exactly (one key: no softmax gradient); measured against |dv| instead
      e_dq *= norm(ref.dqkv, part(0)) / norm(ref.dqkv, part(2));
      e_dk *= norm(ref.dqkv, part(1)) / norm(ref.dqkv, part(2));
    }
    guards = b_qkv.guard_ok() && b_dout.guard_ok() && b_out.guard_ok() && b_lse.guard_ok() && b_dqkv.guard_ok() &&
             b_delta.guard_ok();
  } catch (const EmulationError& e) {
    error = e.what();
  }
  const AttentionTolerance tol = attention_tolerance(true, !std::is_same_v<Elem, float>, ref.score_rms);
  const double tol_fwd = tol.out, tol_bwd = tol.grads, tol_lse = tol.lse;
  const auto fwd_ok = [&](double e) { return e <= tol_fwd; };  // NaN (an unwritten output) fails
  const auto bwd_ok = [&](double e) { return e <= tol_bwd; };
  const bool ok = error.empty() && fwd_ok(e_out) && e_lse <= tol_lse && bwd_ok(e_dq) && bwd_ok(e_dk) && bwd_ok(e_dv) &&
                  guards;
  const AttentionTcPlan plan = emae::cuda::attention_tc_plan<kD>(T);
  std::printf("%s %s S=%d T=%d H=%d dh=%d amp=%g offset=%zu (rounds %d, grid.y %d, chunks %d, vec %d)%s%s  σ %.2f  out %.2e "
              "(tol %.1e)  lse %.2e (tol %.1e)  dq %.2e  dk %.2e  dv %.2e (tol %.1e)  [%lld collectives]%s%s%s\n",
              ok ? "PASS" : "FAIL", emae::dtype_name(Storage<Elem>::kType), S, T, H, kD, c.amp, c.offset, plan.rounds,
              plan.grid_y, plan.chunks, (int)p.vec,
              c.note[0] ? "  " : "", c.note, ref.score_rms, e_out, tol_fwd, e_lse, tol_lse, e_dq, e_dk, e_dv, tol_bwd,
              emu.collectives - before,
              guards ? "" : "  GUARD OVERWRITTEN", error.empty() ? "" : "  ERROR: ", error.c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

template <class Elem>
int run_dh(const Case& c, uint64_t seed, BlockEmulator& emu) {
  switch (c.shape.dh) {
    case 32: return run_case<32, Elem>(c, seed, emu);
    case 64: return run_case<64, Elem>(c, seed, emu);
    case 128: return run_case<128, Elem>(c, seed, emu);
  }
  std::printf("FAIL dh=%d has no tensor-core kernel\n", c.shape.dh);
  return 1;
}

int run_any(const Case& c, uint64_t seed, BlockEmulator& emu) {
  return c.storage == DType::kBF16 ? run_dh<bf16_t>(c, seed, emu) : run_dh<float>(c, seed, emu);
}

// A call whose views mix fp32 and bf16 is refused (std::invalid_argument naming the views) before
// anything is launched, on either path.
int mixed_storage() {
  using emae::Act;
  using emae::ActIn;
  using emae::cuda::AttentionPath;
  float f[64] = {};
  uint16_t b[64] = {};
  const Act f32(f), bf(b, DType::kBF16);
  struct Mixed {
    const char* what;
    std::function<void(AttentionPath)> call;
    const char* expect;
  };
  const Mixed cases[] = {
      {"forward: out bf16, qkv fp32",
       [&](AttentionPath a) { emae::cuda::attention_forward_on(a, bf, f, f32, 1, 4, 1, 32, 0); },
       "attention_forward: out is bf16 but qkv is fp32"},
      {"backward: dout fp32, the rest bf16",
       [&](AttentionPath a) { emae::cuda::attention_backward_on(a, bf, f32, bf, bf, f, 1, 4, 1, 32, f, 0); },
       "attention_backward: dout is fp32 but qkv is bf16"},
      {"backward: dqkv bf16, the rest fp32",
       [&](AttentionPath a) { emae::cuda::attention_backward_on(a, bf, f32, f32, f32, f, 1, 4, 1, 32, f, 0); },
       "attention_backward: dqkv is bf16 but qkv is fp32"},
  };
  int failures = 0;
  for (AttentionPath path : {AttentionPath::kSimt, AttentionPath::kTc})
    for (const Mixed& m : cases) {
      std::string msg = "(no exception)";
      try {
        m.call(path);
      } catch (const std::invalid_argument& e) {
        msg = e.what();
      } catch (const std::exception& e) {
        msg = std::string("wrong exception type: ") + e.what();
      }
      const bool ok = msg.rfind(m.expect, 0) == 0;
      std::printf("%s mixed storage [%s] %s -> \"%s\"\n", ok ? "PASS" : "FAIL",
                  emae::cuda::attention_path_name(path), m.what, msg.c_str());
      failures += !ok;
    }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
      return 2;
    }
  }
  // the index functions against the PTX ISA's fragment layouts (what the emulated mma decodes)
  namespace d = emae::cuda::attention_tc_detail;
  int failures = 0;
  for (int lane = 0; lane < 32; ++lane) {
    failures += d::frag_c_row(lane, 3) != lane / 4 + 8 || d::frag_c_col(lane, 1) != 2 * (lane % 4) + 1;
    failures += d::frag_a_row(lane, 1) != lane / 4 + 8 || d::frag_a_col(lane, 2) != 2 * (lane % 4) + 8;
  }
  if (failures) std::printf("FAIL fragment index functions\n");

  BlockEmulator* emu = new BlockEmulator();
  const std::vector<Case> quick_cases = {
      {{1, 50, 2, 64}, 1.f, 0, "(encoder: T = 50)"},
      {{1, 197, 1, 32}, 1.f, 0, "(decoder: T = 197)"},
      {{2, 7, 3, 128}, 1.f, 0, "(odd T, odd heads)"},
      {{1, 50, 2, 64}, 1.f, 0, "(encoder: T = 50)", DType::kBF16},
      {{1, 33, 2, 32}, 1.f, 3, "(misaligned, odd T)", DType::kBF16},
  };
  const std::vector<Case> cases = {
      {{2, 1, 3, 32}, 1.f, 0, "(T = 1)"},
      {{2, 7, 3, 32}, 1.f, 0, "(odd T, odd heads)"},
      {{1, 16, 2, 32}, 1.f, 0, "(T = 16: one exact tile)"},
      {{1, 17, 1, 64}, 1.f, 0, "(T = 17)"},
      {{2, 50, 3, 64}, 1.f, 0, "(encoder)"},
      {{1, 50, 2, 64}, 4.f, 0, "(encoder, peaky softmax)"},
      {{1, 65, 1, 64}, 1.f, 0, "(T = 65: two rounds, a 1-row tile)"},
      {{1, 197, 3, 32}, 1.f, 0, "(decoder)"},
      {{1, 197, 1, 32}, 4.f, 0, "(decoder, peaky softmax)"},
      {{1, 197, 1, 32}, 8.f, 0, "(decoder, very large logits)"},
      {{1, 200, 1, 64}, 1.f, 0, "(T = 200)"},
      {{1, 50, 1, 64}, 1.f, 1, "(misaligned: scalar loads)"},
      {{1, 33, 2, 32}, 1.f, 3, "(misaligned, odd T)"},
      {{1, 300, 1, 32}, 1.f, 0, "(T > 256: two chunks, one round per block)"},
      {{1, 7, 2, 128}, 1.f, 0, "(dh = 128, odd T)"},
      {{1, 50, 1, 128}, 1.f, 0, "(dh = 128)"},
      {{1, 130, 1, 128}, 1.f, 0, "(dh = 128, T > 128: two chunks)"},
      {{1, 130, 1, 128}, 4.f, 1, "(dh = 128, two chunks, peaky, misaligned)"},
      // bf16 storage: 16-byte row copies into shared memory, 32-bit pairs into A fragments (and
      // 2-byte loads when misaligned), bf16 stores, D from the bf16 dout and out
      {{2, 1, 3, 32}, 1.f, 0, "(T = 1)", DType::kBF16},
      {{2, 7, 3, 32}, 1.f, 0, "(odd T, odd heads)", DType::kBF16},
      {{2, 50, 3, 64}, 1.f, 0, "(encoder)", DType::kBF16},
      {{1, 65, 1, 64}, 1.f, 0, "(T = 65: two rounds, a 1-row tile)", DType::kBF16},
      {{1, 197, 3, 32}, 1.f, 0, "(decoder)", DType::kBF16},
      {{1, 197, 1, 32}, 8.f, 0, "(decoder, very large logits)", DType::kBF16},
      {{1, 50, 1, 64}, 1.f, 1, "(misaligned: scalar loads)", DType::kBF16},
      {{1, 33, 2, 32}, 1.f, 3, "(misaligned, odd T)", DType::kBF16},
      {{1, 300, 1, 32}, 1.f, 0, "(T > 256: two chunks, one round per block)", DType::kBF16},
      {{1, 7, 2, 128}, 1.f, 0, "(dh = 128, odd T)", DType::kBF16},
      {{1, 130, 1, 128}, 4.f, 1, "(dh = 128, two chunks, peaky, misaligned)", DType::kBF16},
  };
  uint64_t seed = 99;
  for (const Case& c : quick ? quick_cases : cases) failures += run_any(c, seed += 10, *emu);
  failures += mixed_storage();
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
