// CPU emulation of cuda/gemm_sm90.cuh (no GPU needed): runs the header's own CTA body (cta_body,
// with the tensor maps and grid of launch_plan) on the host, one CTA at a time, its 384 threads as
// cooperative fibers (ucontext), and the Hopper operations emulated from the PTX ISA and the CUDA
// driver documentation — not from the header's comments:
//   - cp.async.bulk.tensor.2d (PTX ISA 9.7.9.25.5.2, tensor modes 5.5.3, swizzling modes 5.5.7,
//     cuTensorMapEncodeTiled in cuda.h): the box {box[0] elements, box[1] rows} at the coordinates
//     lands row after row at dst; every 16-byte chunk then moves to chunk ^ (line & mask), the line
//     being address bits 7.. of the shared address (mask 1, 3, 7 for 32, 64, 128-byte swizzle: the
//     8-line tables of 5.5.7, anchored at 256/512/1024-byte boundaries); elements outside the tensor
//     are zero (or OOB-NaN); on completion complete-tx of the whole box's bytes on the mbarrier. The
//     encode arguments are validated as cuda.h documents (alignment, strides, box ≤ 256, inner box ≤
//     swizzle span), and every global read must stay in the operand's allocation;
//   - wgmma.mma_async.m64nNk16.f32.bf16.bf16 with both operands by descriptor (9.7.15.5.1.2): start
//     address bits 0–13, LBO 16–29, SBO 32–45 (all ≫ 4), base offset 49–51, layout 62–63 (0 none,
//     1 128B, 2 64B, 3 32B); K-major canonical layouts ((8,m),(T,2k)):((W/16·T, SBO),(1,T)) under
//     Swizzle<b,4,3> of the byte address (LBO unused), or ((8,m),(T,2k)):((T,SBO),(1,LBO)) without
//     swizzle; reserved bits 0; base offset = (pattern start ≫ 7) & (span/16 − 1), which is 0 for
//     atoms on their 1024/512/256-byte boundary (the only case the emulation decodes); with
//     imm-trans-a / imm-trans-b = 1 that operand is MN-major (9.7.15.5.1.2, canonical layouts
//     9.7.15.5.1.2.1.3, in elements, T = 8 for bf16): ((T,S,m),(8,k)):((1,T,LBO),(S·T,SBO)) under
//     Swizzle<log2 S,4,3> for a swizzle of S·16 bytes (S = 2, 4, 8), or ((T,1,m),(8,k)):((1,T,SBO),(T,LBO))
//     without swizzle (LBO and SBO trade places there, as the ISA's LBO/SBO tables say); the
//     swizzle is taken on the byte address, as for K-major (the ISA's tables do not name the unit;
//     the byte reading is the one that matches TMA's 128-byte swizzle); checked against the ISA's
//     three bf16 MN-major examples; D += A·Bᵀ (scale-d = 1; the .inc's operand lists are checked as
//     text, trans immediates bound to the kernel's kTransA, kTransB); the accumulator
//     fragment: register i of thread t holds D(16·(t/32) + (t%32)/4 + 8·((i/2)%2), 8·(i/4) +
//     2·(t%4) + i%2) (9.7.15.5.1.1 figure "WGMMA .m64nNk16 register fragment layout for accumulator
//     matrix D", as CuTe's CLayout_64xN and microsoft/MMA-Sim's hardware tests spell it);
//     wgmma is asynchronous: shared memory is read and the accumulators written only when
//     wgmma.wait_group retires the group (reading the accumulators before that sees NaN), a fence is
//     required before the first wgmma and after the registers were touched (9.7.15.7.1); all 128
//     threads of the warpgroup must issue the same instruction with the same descriptors;
//   - mbarrier (9.7.13.15): init (phase 0, pending = expected = count, tx 0), expect-tx, arrive-on,
//     complete-tx; a phase completes when pending arrivals and tx-count are both 0;
//     try_wait.parity P succeeds when the current phase's parity is not P; an arrive-on in phase
//     p ≥ 1 needs a successful wait that saw phase p − 1 complete (9.7.13.15.4); barriers are used
//     by other threads only after fence.mbarrier_init and a bar.sync;
//   - setmaxnreg (9.7.19.5): the same instruction in all 4 warps of a warpgroup, 24..256 in steps
//     of 8, .inc blocks until the CTA's pool (launch-bounds registers × threads) has enough;
//   - the stores are gemm_bf16.cuh's own store_epilogue (the instantiation launch picks, counted),
//     the split-K reduce gemm.cuh's reduce_output (gemm_reduce_kernel's body), so the fused
//     epilogues (GELU forward: C = pre-activation and gelu_out; backward: C ⊙ gelu'(gelu_inp)) run
//     the code the GPU runs, split-K off and on; the a_sums cases take A from gemm_bf16.cuh's
//     conversion kernel with the bias gradient's row sums (bf16_convert_emulate.h), which must
//     equal column_sum_accumulate's sums bit for bit.
// The MN-major cases enter through gemm_dispatch.cuh's convert_operands as a GemmParams with the
// step's layouts (dinp: B stored (K, N); dweight: A stored (K, M) and B (K, N)), which must hand
// them to sm90 (and sm80) in place.
// Checks: against a double reference on the bf16 inputs (bf16 NaN past K in every row, so a read
// past K shows); every output element written exactly once, NaN-poisoned outputs, sentinels in the
// C padding (ldc > N) and after every buffer; shared memory NaN-poisoned per CTA, the dynamic base
// moved off 1024-byte alignment per CTA; every TMA write, wgmma read and mbarrier inside the
// dynamic allocation and never overlapping each other; a TMA that writes bytes an in-flight wgmma
// reads, or a wgmma that reads bytes a TMA is still writing or that no TMA ever wrote, fails; so do
// deadlocks (every thread blocked, no TMA in flight), divergent collectives, a barrier left
// mid-phase at exit and wgmma still in flight at exit. Scheduling: a random runnable thread at a
// time, by a per-run policy (balanced; producer first with TMA completing at once; consumers first
// with TMA as late as possible; one consumer warpgroup lagging), each case under two policies.
//   nvcc -std=c++17 -O2 --expt-relaxed-constexpr -arch=sm_80 -I. -Inative cuda/dev/gemm_sm90_emulate.cu \
//     -o /tmp/gemm_sm90_emulate   (the device code is compiled but never run)
//   /tmp/gemm_sm90_emulate [--quick] [--seed N]
// Mutation check: 34 copies of the header with one deliberate fault each. The 32 real faults all
// make this program fail: descriptor SBO 512, k-slice advance 16·k (A or B), layout 64B / 32B /
// none / bit 61, base offset 1, TMA map with 64B swizzle, dims ld instead of K, B box of kBM rows,
// tiles aligned to 128 bytes only, the second consumer's A slice at 32 rows, phase not flipped
// (producer or consumers), producer waiting on the unflipped parity, release of the current stage,
// no release at the end of an item, wait_group 2, no final wait_group 0, no wgmma.fence, no
// fence.mbarrier_init, accumulator halves swapped, lane/4 ↔ lane%4, column step 1, expect_tx of the
// A bytes only, empty count 7, k_tiles rounded down, producer item stride 1, B tiles overlapping A,
// barriers over the tiles, setmaxnreg.inc 240 (168 → 40 frees exactly enough for 232). The 2
// equivalent ones pass, as they should: LBO 64 (unused by swizzled K-major layouts) and
// wait_group 0 for 1. The emulation found one real fault: launch ran k_split 0 (GemmBf16Params'
// "all of K") as an empty K range; launch_plan now sets k_split = K when splits == 1, as
// sm80::launch does. Fused epilogues, 7 more faults, all caught: bias dropped under a GELU
// forward, gelu_out = the pre-activation, gelu' instead of gelu, the reduce without the GELU, the
// GELU on every split partial, the plain instantiation for a GELU GEMM, row sums in reverse order.
// MN-major operands, 10 more faults, all caught: imm-trans-a or imm-trans-b passed as 0 for an
// MN-major operand, the MN-major descriptor's LBO 4096 (not the 8192-byte box), its SBO 512 or
// 2048, K slices 1024 bytes apart (not 2048), layout 64B, B's box coordinates swapped (K, MN), B's
// box of kBN K rows, the .inc's trans immediates swapped; and 3 in gemm_dispatch.cuh (when it still
// chose per path): MN-major operands not read in place on sm90, B's MN-major flag dropped, MN-major
// operands copied for sm80. The dispatch now reads every aligned bf16 operand in place on both.
// Exit status non-zero on any FAIL.
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/dev/bf16_convert_emulate.h"
#include "cuda/gemm_dispatch.cuh"
#include "cuda/gemm_sm90.cuh"

namespace {

namespace sm90 = emae::cuda::sm90;
using emae::cuda::GemmBf16Params;
using bf16_t = __nv_bfloat16;

struct EmulationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

float bf16_to_float(uint16_t b) {
  const uint32_t u = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t float_to_bf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7fc0;
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}
constexpr uint16_t kBf16NaN = 0x7fc0;
constexpr uint16_t kOobNaN = 0x7fff;  // what the emulation writes for OOB-NaN fill

std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", (unsigned long long)v);
  return b;
}

// ---- swizzle (PTX ISA 5.5.7) -------------------------------------------------------------------

// Bytes of the swizzle span: 0 (none), 32, 64, 128. The 16-byte chunk index (address bits 4..6)
// is XORed with the 128-byte line's index in the repeating pattern (address bits 7..), masked to the
// span's chunk count: the tables of 5.5.7 (row r, position p holds chunk p ^ r), anchored at the
// 256/512/1024-byte boundaries of the shared address.
uint32_t swizzle(uint32_t addr, int span) {
  if (span == 0) return addr;
  const uint32_t mask = (uint32_t)span / 16 - 1;
  return addr ^ (((addr >> 7) & mask) << 4);
}

// ---- emulated tensor map (cuTensorMapEncodeTiled's arguments) ----------------------------------

struct Allocation {
  const uint8_t* base;
  size_t bytes;
};

struct TensorMap {
  const uint8_t* base = nullptr;
  uint64_t dims[2] = {}, stride = 0;
  uint32_t box[2] = {};
  int span = 0;  // swizzle bytes
  bool nan_fill = false;
};

// Validates the encode arguments as cuda.h documents cuTensorMapEncodeTiled (what this emulation
// supports: bf16, rank 2, no interleave, unit element strides, 16-byte-atom swizzles).
TensorMap emulate_encode(const sm90::detail::TensorMapArgs& a) {
  auto bad = [](const std::string& s) {
    throw EmulationError("cuTensorMapEncodeTiled would fail or is not emulated: " + s);
  };
  if (a.type != CU_TENSOR_MAP_DATA_TYPE_BFLOAT16) bad("data type is not bf16");
  if (a.rank != 2) bad("rank is not 2");
  if (reinterpret_cast<uintptr_t>(a.base) % 16) bad("globalAddress not 16-byte aligned");
  for (int i = 0; i < 2; ++i)
    if (a.dims[i] == 0 || a.dims[i] > (1ull << 32)) bad("globalDim[" + std::to_string(i) + "] out of range");
  if (a.strides[0] % 16 || a.strides[0] >= (1ull << 40)) bad("globalStrides[0] not a multiple of 16 below 2^40");
  if (a.strides[0] < a.dims[0] * 2) bad("globalStrides[0] < globalDim[0] · element size");
  for (int i = 0; i < 2; ++i)
    if (a.box[i] == 0 || a.box[i] > 256) bad("boxDim[" + std::to_string(i) + "] not in 1..256");
  if (a.box[0] * 2 % 16) bad("boxDim[0] · element size not a multiple of 16 bytes");
  if (a.element_strides[0] != 1 || a.element_strides[1] != 1) bad("element strides other than 1");
  if (a.interleave != CU_TENSOR_MAP_INTERLEAVE_NONE) bad("interleave");
  TensorMap m;
  switch (a.swizzle) {
    case CU_TENSOR_MAP_SWIZZLE_NONE: m.span = 0; break;
    case CU_TENSOR_MAP_SWIZZLE_32B: m.span = 32; break;
    case CU_TENSOR_MAP_SWIZZLE_64B: m.span = 64; break;
    case CU_TENSOR_MAP_SWIZZLE_128B: m.span = 128; break;
    default: bad("swizzle mode with 32/64-byte atomicity");
  }
  if (m.span && a.box[0] * 2 > (uint32_t)m.span) bad("inner box dimension larger than the swizzle span");
  if (m.span && a.box[0] * 2 != (uint32_t)m.span) bad("inner box narrower than the swizzle span (not emulated)");
  if (a.oob_fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE &&
      a.oob_fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA)
    bad("oob fill");
  m.base = reinterpret_cast<const uint8_t*>(a.base);
  m.dims[0] = a.dims[0];
  m.dims[1] = a.dims[1];
  m.stride = a.strides[0];
  m.box[0] = a.box[0];
  m.box[1] = a.box[1];
  m.nan_fill = a.oob_fill == CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA;
  return m;
}

// ---- wgmma descriptors (PTX ISA 9.7.15.5.1.2) -------------------------------------------------

struct Descriptor {
  uint32_t start, lbo, sbo, base_offset;
  int span;  // 0 (no swizzle), 32, 64, 128
};

Descriptor decode(uint64_t d, const char* which) {
  const uint64_t used = 0x3FFFull | 0x3FFFull << 16 | 0x3FFFull << 32 | 0x7ull << 49 | 0x3ull << 62;
  if (d & ~used)
    throw EmulationError(std::string("wgmma: reserved bits set in the ") + which + " descriptor " + hex(d));
  Descriptor r;
  r.start = (uint32_t)(d & 0x3FFF) << 4;
  r.lbo = (uint32_t)((d >> 16) & 0x3FFF) << 4;
  r.sbo = (uint32_t)((d >> 32) & 0x3FFF) << 4;
  r.base_offset = (uint32_t)((d >> 49) & 7);
  static const int spans[4] = {0, 128, 64, 32};
  r.span = spans[d >> 62];
  if (r.span) {  // the operand's first 8-row atom starts at the line of its start address
    const uint32_t want = (r.start >> 7) & ((uint32_t)r.span / 16 - 1);
    if (r.base_offset != want)
      throw EmulationError(std::string("wgmma: ") + which + " descriptor " + hex(d) + " has matrix base offset " +
                           std::to_string(r.base_offset) + ", the pattern starting at " + hex(r.start & ~127u) +
                           " needs " + std::to_string(want));
    if (want)
      throw EmulationError(std::string("wgmma: ") + which + " operand's swizzle pattern is not at its " +
                           std::to_string(r.span * 8) + "-byte boundary (non-zero base offset: not emulated)");
  }
  return r;
}

// Shared address of element (row r, k) of a rows × 16 bf16 operand; row is M (A) or N (B).
// MN-major (imm-trans 1), PTX ISA 9.7.15.5.1.2.1.3 in bytes: T = 8 elements = 16 bytes, S = span/16.
uint32_t operand_address_mn(const Descriptor& d, int r, int k) {
  if (d.span == 0)  // ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)): 8 MN elements contiguous, K rows 16 bytes apart
    return d.start + (r % 8) * 2 + (r / 8) * d.sbo + (k % 8) * 16 + (k / 8) * d.lbo;
  // ((T,S,m),(8,k)):((1,T,LBO),(S·T,SBO)): S·T MN elements contiguous (one span), K rows a span apart
  const int per_span = d.span / 2;
  return swizzle(d.start + (r % per_span) * 2 + (r / per_span) * d.lbo + (k % 8) * (uint32_t)d.span + (k / 8) * d.sbo,
                 d.span);
}
uint32_t operand_address(const Descriptor& d, int r, int k, bool mn_major = false) {
  if (mn_major) return operand_address_mn(d, r, k);
  if (d.span == 0)  // ((8,m),(T,2k)):((T,SBO),(1,LBO)), T = 8 elements = 16 bytes: 8×16-byte core matrices
    return d.start + (r % 8) * 16 + (r / 8) * d.sbo + (k % 8) * 2 + (k / 8) * d.lbo;
  // ((8,m),(T,2k)):((span/16·T, SBO),(1,T)) then Swizzle<log2(span/16),4,3> on the byte address
  return swizzle(d.start + (r % 8) * (uint32_t)d.span + (r / 8) * d.sbo + 2 * k, d.span);
}

// The accumulator fragment of wgmma .m64nNk16 .f32: (row, col) of register i of thread t.
int frag_row(int t, int i) { return 16 * (t / 32) + (t % 32) / 4 + 8 * ((i / 2) % 2); }
int frag_col(int t, int i) { return 8 * (i / 4) + 2 * (t % 4) + i % 2; }

// ---- the CTA emulator ---------------------------------------------------------------------------

constexpr uint32_t kWindow = 228 * 1024;  // a CTA's shared window: 228 KB per Hopper SM
constexpr size_t kStack = 128 * 1024;

struct Policy {
  const char* name;
  double weight[3];  // producer warpgroup, consumer 1, consumer 2
  int tma;           // 0: complete at once, 1: at random, 2: only when no thread can run
  double p_tma;
};
const Policy kPolicies[] = {
    {"balanced", {1, 1, 1}, 1, 0.3},
    {"producer first, TMA at once", {50, 1, 1}, 0, 0},
    {"consumers first, TMA late", {1, 20, 20}, 2, 0},
    {"consumer 2 lags", {1, 8, 0.05}, 1, 0.15},
};
constexpr int kNumPolicies = sizeof(kPolicies) / sizeof(kPolicies[0]);

enum class Op { kRun, kWait, kSync, kColl, kDone, kFault };
enum class Coll { kFence, kMma, kCommit, kWaitGroup, kRegsDec, kRegsInc };
const char* coll_name(Coll c) {
  switch (c) {
    case Coll::kFence: return "wgmma.fence";
    case Coll::kMma: return "wgmma.mma_async";
    case Coll::kCommit: return "wgmma.commit_group";
    case Coll::kWaitGroup: return "wgmma.wait_group";
    case Coll::kRegsDec: return "setmaxnreg.dec";
    case Coll::kRegsInc: return "setmaxnreg.inc";
  }
  return "?";
}

struct Thread {
  ucontext_t ctx;
  Op op = Op::kRun;
  uint32_t bar = 0;  // kWait
  int parity = 0;
  Coll coll = Coll::kFence;  // kColl
  int imm = 0;
  uint64_t da = 0, db = 0;
  float* acc = nullptr;
  // wgmma on this thread's accumulator registers
  float* live = nullptr;  // the registers of the operations in flight
  int in_flight = 0;
  bool fenced = false, ever_fenced = false, mma_issued = false;
  float shadow[128];  // values the in-flight operations accumulate into
  float left[128];    // what the last retired group left in the registers
};

struct Mbar {
  int index = 0, expected = 0, pending = 0, init_tid = -1;
  long long tx = 0, phase = 0, observed = -1;
  bool fenced = false, visible = false;
};

struct MmaOp {
  uint64_t da, db;
  int n;
  bool trans_a, trans_b;
  std::vector<uint32_t> chunks;  // 16-byte chunks read
};

struct Tma {
  uint32_t bar, bytes;
  std::vector<std::pair<uint32_t, uint16_t>> writes;
  std::vector<uint32_t> chunks;
};

struct Outputs {
  const GemmBf16Params* p;
  std::vector<int> count_c, count_partial;
};

class Cta;
Cta* g_cta = nullptr;

class Cta {
 public:
  Cta() : stacks_(kMaxThreads, std::vector<char>(kStack)) {}

  // configuration of one run
  int threads = 0, launch_regs = 0;
  unsigned block = 0, grid = 0;
  uint32_t dyn_base = 0, dyn_bytes = 0;
  TensorMap maps[2];
  std::vector<Allocation> allocations;
  Outputs* out = nullptr;
  const Policy* policy = &kPolicies[0];
  std::mt19937_64 rng{1};
  // statistics
  long long steps = 0, mma_ops = 0, tma_ops = 0, producer_blocked = 0, consumer_blocked = 0;

  std::vector<uint8_t> smem;  // the shared window; address 0 is smem[0]

  void run(std::function<void(int)> body) {
    smem.assign(kWindow, 0xff);  // bf16 NaN everywhere
    kind_.assign(kWindow, 0);
    written_.assign(kWindow / 16, 0);
    reading_.assign(kWindow / 16, 0);
    writing_.assign(kWindow / 16, 0);
    bars_.clear();
    tma_.clear();
    error_.clear();
    for (int w = 0; w < 3; ++w) wg_[w] = Warpgroup{launch_regs};
    pool_ = 0;
    body_ = std::move(body);
    g_cta = this;
    for (int tid = 0; tid < threads; ++tid) {
      Thread& th = t_[tid];
      th = Thread{};
      getcontext(&th.ctx);
      th.ctx.uc_stack.ss_sp = stacks_[tid].data();
      th.ctx.uc_stack.ss_size = kStack;
      th.ctx.uc_link = &sched_;
      makecontext(&th.ctx, reinterpret_cast<void (*)()>(&Cta::entry), 1, tid);
    }
    std::vector<int> ready[3];
    for (;;) {
      for (auto& r : ready) r.clear();
      for (int tid = 0; tid < threads; ++tid)
        if (runnable(tid)) ready[tid / 128].push_back(tid);
      const bool any = !ready[0].empty() || !ready[1].empty() || !ready[2].empty();
      if (!tma_.empty() && (!any || policy->tma == 0 || (policy->tma == 1 && unit() < policy->p_tma))) {
        complete_tma(rng() % tma_.size());
        continue;
      }
      if (!any) {
        if (try_collectives()) continue;
        bool all_done = true;
        for (int tid = 0; tid < threads; ++tid) all_done &= t_[tid].op == Op::kDone;
        if (all_done) break;
        throw EmulationError(deadlock_report());
      }
      double total = 0;
      for (int c = 0; c < 3; ++c) total += ready[c].empty() ? 0 : policy->weight[c];
      double x = unit() * total;
      int c = 0;
      for (; c < 2; ++c) {
        if (ready[c].empty()) continue;
        if (x < policy->weight[c]) break;
        x -= policy->weight[c];
      }
      while (ready[c].empty()) c = (c + 1) % 3;
      resume(ready[c][rng() % ready[c].size()]);
    }
    for (const auto& [addr, b] : bars_)
      if (b.pending != b.expected || b.tx != 0)
        throw EmulationError("mbarrier #" + std::to_string(b.index) + " left mid-phase at exit (" +
                             std::to_string(b.expected - b.pending) + " of " + std::to_string(b.expected) +
                             " arrivals, tx-count " + std::to_string(b.tx) + ")");
    for (int w = 0; w < 3; ++w)
      if (!wg_[w].open.empty() || !wg_[w].groups.empty())
        throw EmulationError("warpgroup " + std::to_string(w) + " exits with wgmma operations in flight");
  }

  // ---- called from the fibers (HostOps) ----

  uint32_t addr_of(int tid, const void* p) {
    const uint8_t* b = reinterpret_cast<const uint8_t*>(p);
    if (b < smem.data() || b >= smem.data() + smem.size()) fault(tid, "generic address outside the shared window");
    return (uint32_t)(b - smem.data());
  }
  void yield(int tid) { park(tid, Op::kRun); }
  void sync(int tid) { park(tid, Op::kSync); }

  void mbar_init(int tid, uint32_t a, int count) {
    check_bar_address(tid, a, "mbarrier.init");
    if (bars_.count(a)) fault(tid, "mbarrier.init on a valid mbarrier object (undefined: inval first)");
    if (count < 1 || count > (1 << 20) - 1) fault(tid, "mbarrier.init count out of 1..2^20-1");
    for (uint32_t i = a; i < a + 8; ++i) {
      if (writing_[i / 16] || reading_[i / 16] || written_[i / 16]) fault(tid, "mbarrier placed over TMA/wgmma data");
      kind_[i] = 1;
    }
    Mbar& b = bars_[a];
    b.index = (int)bars_.size() - 1;
    b.expected = b.pending = count;
    b.init_tid = tid;
    yield(tid);
  }
  void fence_init(int tid) {
    for (auto& [a, b] : bars_)
      if (b.init_tid == tid) b.fenced = true;
  }
  void mbar_wait(int tid, uint32_t a, int parity) {
    Mbar& b = bar(tid, a, "mbarrier.try_wait.parity");
    (void)b;
    if (parity != 0 && parity != 1) fault(tid, "try_wait.parity with a parity other than 0 or 1");
    t_[tid].bar = a;
    t_[tid].parity = parity;
    if (!wait_done(t_[tid])) ++(tid < 128 ? producer_blocked : consumer_blocked);
    park(tid, Op::kWait);
  }
  void mbar_arrive(int tid, uint32_t a, int tx_bytes, const char* what) {
    Mbar& b = bar(tid, a, what);
    if (b.phase >= 1 && b.observed < b.phase - 1)
      fault(tid, std::string(what) + " on mbarrier #" + std::to_string(b.index) + " in phase " +
                     std::to_string(b.phase) + " before any wait saw phase " + std::to_string(b.phase - 1) +
                     " complete");
    if (tx_bytes) {
      b.tx += tx_bytes;  // expect-tx, then arrive-on
      if (b.tx > (1 << 20) - 1) fault(tid, "tx-count above 2^20-1");
    }
    if (--b.pending < 0) fault(tid, std::string(what) + ": more arrivals than the expected count in a phase");
    maybe_complete(b);
    yield(tid);
  }
  void tma_load(int tid, int which, uint32_t dst, int c0, int c1, uint32_t a) {
    bar(tid, a, "cp.async.bulk.tensor");
    const TensorMap& m = maps[which];
    if (dst % 128) fault(tid, "cp.async.bulk.tensor: shared destination not 128-byte aligned");
    const uint32_t row_bytes = m.box[0] * 2, bytes = row_bytes * m.box[1];
    if (dst < dyn_base || dst + bytes > dyn_base + dyn_bytes)
      fault(tid, "cp.async.bulk.tensor: box of " + std::to_string(bytes) + " bytes at " + hex(dst) +
                     " leaves the dynamic shared memory");
    Tma op;
    op.bar = a;
    op.bytes = bytes;
    op.writes.reserve(bytes / 2);
    for (uint32_t r = 0; r < m.box[1]; ++r)
      for (uint32_t e = 0; e < m.box[0]; ++e) {
        const long long x = (long long)c0 + e, y = (long long)c1 + r;
        uint16_t v = m.nan_fill ? kOobNaN : 0;
        if (x >= 0 && y >= 0 && (uint64_t)x < m.dims[0] && (uint64_t)y < m.dims[1]) {
          const uint8_t* g = m.base + (uint64_t)y * m.stride + (uint64_t)x * 2;
          bool inside = false;
          for (const Allocation& al : allocations) inside |= g >= al.base && g + 2 <= al.base + al.bytes;
          if (!inside) fault(tid, "cp.async.bulk.tensor reads global memory outside the operand's allocation");
          std::memcpy(&v, g, 2);
        }
        const uint32_t s = swizzle(dst + r * row_bytes + e * 2, m.span);
        op.writes.push_back({s, v});
      }
    for (const auto& w : op.writes) {
      if (w.first < dyn_base || w.first + 2 > dyn_base + dyn_bytes)
        fault(tid, "cp.async.bulk.tensor: swizzled write at " + hex(w.first) + " leaves the dynamic shared memory");
      if (kind_[w.first]) fault(tid, "cp.async.bulk.tensor writes over an mbarrier object");
      const uint32_t ch = w.first / 16;
      if (reading_[ch])
        fault(tid, "cp.async.bulk.tensor overwrites shared memory at " + hex(w.first) +
                       " that an in-flight wgmma still reads (stage released too early)");
      if (op.chunks.empty() || op.chunks.back() != ch) op.chunks.push_back(ch);
    }
    std::sort(op.chunks.begin(), op.chunks.end());
    op.chunks.erase(std::unique(op.chunks.begin(), op.chunks.end()), op.chunks.end());
    for (uint32_t ch : op.chunks)
      if (writing_[ch]++) fault(tid, "two cp.async.bulk.tensor in flight write the same shared memory");
    tma_.push_back(std::move(op));
    ++tma_ops;
    yield(tid);
  }
  void collective(int tid, Coll c, int imm, uint64_t da = 0, uint64_t db = 0, float* acc = nullptr) {
    Thread& th = t_[tid];
    th.coll = c;
    th.imm = imm;
    th.da = da;
    th.db = db;
    th.acc = acc;
    park(tid, Op::kColl);
  }
  void store(int tid, const GemmBf16Params& p, int split, int row, int col, float v0, float v1) {
    // counts the writes, then gemm_bf16.cuh's own store_epilogue (the instantiation launch picks)
    if (row < 0 || col < 0 || split < 0 || split >= std::max(p.splits, 1))
      fault(tid, "epilogue: negative row/column or split out of range");
    for (int j = 0; j < 2 && row < p.M && col + j < p.N; ++j) {
      if (p.splits > 1) ++out->count_partial[((size_t)split * p.M + row) * p.N + col + j];
      else ++out->count_c[(size_t)row * p.N + col + j];
    }
    emae::cuda::with_epilogue(p, [&](auto epi) { decltype(epi)::store(p, split, row, col, v0, v1); });
  }

 private:
  static constexpr int kMaxThreads = 384;
  struct Warpgroup {
    int regs = 0;
    std::vector<MmaOp> open;
    std::deque<std::vector<MmaOp>> groups;
  };

  static void entry(int tid) {
    g_cta->body_(tid);
    g_cta->t_[tid].op = Op::kDone;
  }
  double unit() { return (double)(rng() >> 11) * (1.0 / 9007199254740992.0); }

  void park(int tid, Op op) {
    t_[tid].op = op;
    swapcontext(&t_[tid].ctx, &sched_);
  }
  [[noreturn]] void fault(int tid, const std::string& what) {
    error_ = "thread " + std::to_string(tid) + ": " + what;
    t_[tid].op = Op::kFault;
    swapcontext(&t_[tid].ctx, &sched_);
    std::abort();  // never resumed
  }

  void check_bar_address(int tid, uint32_t a, const char* what) {
    if (a % 8) fault(tid, std::string(what) + ": mbarrier not 8-byte aligned");
    if (a < dyn_base || a + 8 > dyn_base + dyn_bytes)
      fault(tid, std::string(what) + ": mbarrier outside the dynamic shared memory");
  }
  Mbar& bar(int tid, uint32_t a, const char* what) {
    check_bar_address(tid, a, what);
    auto it = bars_.find(a);
    if (it == bars_.end()) fault(tid, std::string(what) + " on an uninitialised mbarrier at " + hex(a));
    Mbar& b = it->second;
    if (tid != b.init_tid && !b.visible)
      fault(tid, std::string(what) + " on mbarrier #" + std::to_string(b.index) +
                     " before fence.mbarrier_init and a CTA barrier made its initialisation visible");
    return b;
  }
  void maybe_complete(Mbar& b) {
    if (b.pending == 0 && b.tx == 0) {
      ++b.phase;
      b.pending = b.expected;
    }
  }
  bool wait_done(const Thread& th) const {
    const Mbar& b = bars_.at(th.bar);
    return (b.phase & 1) != th.parity;
  }
  bool runnable(int tid) const {
    const Thread& th = t_[tid];
    return th.op == Op::kRun || (th.op == Op::kWait && wait_done(th));
  }

  void resume(int tid) {
    Thread& th = t_[tid];
    if (th.op == Op::kWait) {  // the wait returns True: it saw the phase before the current one complete
      Mbar& b = bars_.at(th.bar);
      b.observed = std::max(b.observed, b.phase - 1);
    }
    th.op = Op::kRun;
    ++steps;
    swapcontext(&sched_, &th.ctx);
    switch (th.op) {
      case Op::kFault: throw EmulationError(error_);
      case Op::kSync: try_sync(); break;
      case Op::kColl: try_collective(tid / 128); break;
      case Op::kDone:
        if (th.in_flight) throw EmulationError("thread " + std::to_string(tid) + " exits with wgmma in flight");
        try_sync();
        break;
      default: break;
    }
  }

  void try_sync() {
    int at = 0;
    for (int tid = 0; tid < threads; ++tid) at += t_[tid].op == Op::kSync;
    if (at != threads) return;
    for (auto& [a, b] : bars_)
      if (b.fenced) b.visible = true;
    for (int tid = 0; tid < threads; ++tid) t_[tid].op = Op::kRun;
  }

  bool try_collectives() {
    bool any = false;
    for (int w = 0; w < threads / 128; ++w) any |= try_collective(w);
    return any;
  }

  // completes warpgroup w's collective when all its 128 threads wait at one
  bool try_collective(int w) {
    Thread* g = &t_[128 * w];
    for (int i = 0; i < 128; ++i)
      if (g[i].op != Op::kColl) return false;
    const Thread& t0 = g[0];
    for (int i = 1; i < 128; ++i)
      if (g[i].coll != t0.coll || g[i].imm != t0.imm || g[i].da != t0.da || g[i].db != t0.db)
        throw EmulationError("warpgroup " + std::to_string(w) + ": thread 0 at " + coll_name(t0.coll) + " (" +
                             std::to_string(t0.imm) + ", " + hex(t0.da) + ", " + hex(t0.db) + "), thread " +
                             std::to_string(128 * w + i) + " at " + coll_name(g[i].coll) + " (" +
                             std::to_string(g[i].imm) + ", " + hex(g[i].da) + ", " + hex(g[i].db) +
                             "): not the same instruction (divergence)");
    Warpgroup& wg = wg_[w];
    switch (t0.coll) {
      case Coll::kFence:
        for (int i = 0; i < 128; ++i) g[i].fenced = g[i].ever_fenced = true;
        break;
      case Coll::kRegsDec:
      case Coll::kRegsInc: {
        const int r = t0.imm;
        if (r < 24 || r > 256 || r % 8) throw EmulationError("setmaxnreg count not in 24..256 in steps of 8");
        if (t0.coll == Coll::kRegsDec) {
          if (r > wg.regs) throw EmulationError("setmaxnreg.dec above the current count");
          pool_ += 128 * (wg.regs - r);
        } else {
          if (r < wg.regs) throw EmulationError("setmaxnreg.inc below the current count");
          if (128 * (r - wg.regs) > pool_) return false;  // blocks until the pool has enough
          pool_ -= 128 * (r - wg.regs);
        }
        wg.regs = r;
        break;
      }
      case Coll::kMma: issue_mma(w, t0.imm & 0xFFFF, (t0.imm >> 16) & 1, (t0.imm >> 17) & 1);
        break;
      case Coll::kCommit:
        wg.groups.push_back(std::move(wg.open));
        wg.open.clear();
        break;
      case Coll::kWaitGroup:
        while ((int)wg.groups.size() > t0.imm) {
          for (const MmaOp& op : wg.groups.front()) retire_mma(w, op);
          wg.groups.pop_front();
        }
        break;
    }
    for (int i = 0; i < 128; ++i) g[i].op = Op::kRun;
    return true;
  }

  std::vector<uint32_t> operand(const Descriptor& d, int rows, const char* which, bool mn_major) const {
    std::vector<uint32_t> a((size_t)rows * 16);
    for (int r = 0; r < rows; ++r)
      for (int k = 0; k < 16; ++k) {
        const uint32_t x = operand_address(d, r, k, mn_major);
        if (x < dyn_base || x + 2 > dyn_base + dyn_bytes)
          throw EmulationError(std::string("wgmma reads operand ") + which + " at " + hex(x) +
                               ", outside the dynamic shared memory");
        if (kind_[x]) throw EmulationError(std::string("wgmma reads operand ") + which + " from an mbarrier object");
        a[(size_t)r * 16 + k] = x;
      }
    return a;
  }

  // n: the instruction's N; trans_a, trans_b: imm-trans-a, imm-trans-b
  void issue_mma(int w, int n, bool trans_a, bool trans_b) {
    Thread* g = &t_[128 * w];
    const uint64_t da = g[0].da, db = g[0].db;
    MmaOp op{da, db, n, trans_a, trans_b, {}};
    const std::vector<uint32_t> a = operand(decode(da, "A"), 64, "A", trans_a),
                                b = operand(decode(db, "B"), n, "B", trans_b);
    for (const auto* v : {&a, &b})
      for (uint32_t x : *v) {
        const uint32_t ch = x / 16;
        if (writing_[ch])
          throw EmulationError("wgmma reads shared memory at " + hex(x) +
                               " that a cp.async.bulk.tensor is still writing (the full barrier passed early)");
        if (!written_[ch])
          throw EmulationError("wgmma reads shared memory at " + hex(x) + " that no cp.async.bulk.tensor wrote");
        if (op.chunks.empty() || op.chunks.back() != ch) op.chunks.push_back(ch);
      }
    std::sort(op.chunks.begin(), op.chunks.end());
    op.chunks.erase(std::unique(op.chunks.begin(), op.chunks.end()), op.chunks.end());
    for (uint32_t ch : op.chunks) ++reading_[ch];
    for (int i = 0; i < 128; ++i) {
      Thread& th = g[i];
      if (th.in_flight == 0) {
        if (!th.ever_fenced) throw EmulationError("wgmma.mma_async before the warpgroup's first wgmma.fence");
        if (!th.fenced && th.mma_issued && std::memcmp(th.acc, th.left, sizeof(float) * n / 2) != 0)
          throw EmulationError(
              "wgmma.mma_async on accumulators the thread wrote since the last wgmma, without wgmma.fence");
        std::memcpy(th.shadow, th.acc, sizeof(float) * n / 2);
        std::fill(th.acc, th.acc + n / 2, std::nanf(""));  // undefined until wait_group retires the group
        th.live = th.acc;
      } else if (th.acc != th.live) {
        throw EmulationError(
            "wgmma.mma_async on other accumulator registers while a group is in flight (not emulated)");
      }
      ++th.in_flight;
      th.mma_issued = true;
    }
    wg_[w].open.push_back(std::move(op));
    ++mma_ops;
  }

  void retire_mma(int w, const MmaOp& op) {
    const int n = op.n;
    const std::vector<uint32_t> a = operand(decode(op.da, "A"), 64, "A", op.trans_a),
                                b = operand(decode(op.db, "B"), n, "B", op.trans_b);
    auto value = [&](uint32_t x) {
      uint16_t v;
      std::memcpy(&v, &smem[x], 2);
      return (double)bf16_to_float(v);
    };
    std::vector<double> A(64 * 16), B((size_t)n * 16), D((size_t)64 * n);
    for (size_t i = 0; i < A.size(); ++i) A[i] = value(a[i]);
    for (size_t i = 0; i < B.size(); ++i) B[i] = value(b[i]);
    for (int m = 0; m < 64; ++m)
      for (int c = 0; c < n; ++c) {
        double s = 0;
        for (int k = 0; k < 16; ++k) s += A[m * 16 + k] * B[(size_t)c * 16 + k];
        D[(size_t)m * n + c] = s;
      }
    for (int t = 0; t < 128; ++t) {
      Thread& th = t_[128 * w + t];
      for (int i = 0; i < n / 2; ++i)
        th.shadow[i] = (float)((double)th.shadow[i] + D[(size_t)frag_row(t, i) * n + frag_col(t, i)]);
      if (--th.in_flight == 0) {
        std::memcpy(th.live, th.shadow, sizeof(float) * n / 2);
        std::memcpy(th.left, th.shadow, sizeof(float) * n / 2);
        th.fenced = false;
      }
    }
    for (uint32_t ch : op.chunks) --reading_[ch];
  }

  void complete_tma(size_t i) {
    Tma op = std::move(tma_[i]);
    tma_.erase(tma_.begin() + (long)i);
    for (const auto& w : op.writes) std::memcpy(&smem[w.first], &w.second, 2);
    for (uint32_t ch : op.chunks) {
      --writing_[ch];
      written_[ch] = 1;
    }
    Mbar& b = bars_.at(op.bar);
    b.tx -= op.bytes;  // complete-tx
    if (b.tx < -((1 << 20) - 1)) throw EmulationError("tx-count below -(2^20-1)");
    maybe_complete(b);
  }

  std::string deadlock_report() const {
    std::ostringstream s;
    s << "deadlock: no thread can run and no TMA is in flight;";
    int shown = 0;
    for (int tid = 0; tid < threads && shown < 6; ++tid) {
      const Thread& th = t_[tid];
      if (th.op == Op::kDone) continue;
      ++shown;
      s << " thread " << tid << ' ';
      if (th.op == Op::kWait) {
        const Mbar& b = bars_.at(th.bar);
        s << "waits on mbarrier #" << b.index << " parity " << th.parity << " (phase " << b.phase << ", "
          << b.expected - b.pending << '/' << b.expected << " arrivals, tx " << b.tx << ");";
      } else if (th.op == Op::kColl) {
        s << "at " << coll_name(th.coll) << ';';
      } else if (th.op == Op::kSync) {
        s << "at bar.sync;";
      } else {
        s << "?;";
      }
    }
    return s.str();
  }

  std::vector<std::vector<char>> stacks_;
  Thread t_[kMaxThreads];
  ucontext_t sched_;
  std::function<void(int)> body_;
  std::vector<uint8_t> kind_, written_;
  std::vector<uint16_t> reading_, writing_;
  std::map<uint32_t, Mbar> bars_;
  std::vector<Tma> tma_;
  Warpgroup wg_[3];
  long long pool_ = 0;
  std::string error_;
};

// The Ops policy of cta_body, on the emulator.
struct HostOps {
  Cta* cta;
  int tid;
  unsigned thread() const { return (unsigned)tid; }
  unsigned block() const { return cta->block; }
  unsigned grid() const { return cta->grid; }
  uint32_t shared_addr(const void* p) const { return cta->addr_of(tid, p); }
  void sync() const { cta->sync(tid); }
  void init(uint64_t* bar, int count) const { cta->mbar_init(tid, shared_addr(bar), count); }
  void fence_init() const { cta->fence_init(tid); }
  void wait(uint64_t* bar, int parity) const { cta->mbar_wait(tid, shared_addr(bar), parity); }
  void expect_tx(uint64_t* bar, int bytes) const {
    cta->mbar_arrive(tid, shared_addr(bar), bytes, "mbarrier.arrive.expect_tx");
  }
  void arrive(uint64_t* bar) const { cta->mbar_arrive(tid, shared_addr(bar), 0, "mbarrier.arrive"); }
  void load_a(void* dst, int c0, int c1, uint64_t* bar) const {
    cta->tma_load(tid, 0, shared_addr(dst), c0, c1, shared_addr(bar));
  }
  void load_b(void* dst, int c0, int c1, uint64_t* bar) const {
    cta->tma_load(tid, 1, shared_addr(dst), c0, c1, shared_addr(bar));
  }
  template <int Regs>
  void release_regs() const { cta->collective(tid, Coll::kRegsDec, Regs); }
  template <int Regs>
  void claim_regs() const { cta->collective(tid, Coll::kRegsInc, Regs); }
  void mma_fence() const { cta->collective(tid, Coll::kFence, 0); }
  template <int N>
  void fence_acc(float (&)[N]) const {}  // a compiler ordering constraint only: nothing to emulate
  template <int BN, bool kTransA, bool kTransB>
  void mma(float (&acc)[BN / 2], uint64_t desc_a, uint64_t desc_b) const {
    cta->collective(tid, Coll::kMma, BN | (int)kTransA << 16 | (int)kTransB << 17, desc_a, desc_b, acc);
  }
  void mma_commit() const { cta->collective(tid, Coll::kCommit, 0); }
  template <int InFlight>
  void mma_wait() const { cta->collective(tid, Coll::kWaitGroup, InFlight); }
  void store(const GemmBf16Params& p, int split, int row, int col, float v0, float v1) const {
    cta->store(tid, p, split, row, col, v0, v1);
  }
};

// ---- static checks -------------------------------------------------------------------------------

// The wgmma wrappers of gemm_sm90_wgmma.inc, as text: shape m64nNk16.f32.bf16.bf16, accumulators
// %0..%N/2-1 bound in order to d[0..N/2-1] ("+f"), A and B descriptors next, then scale-d = p (set
// from the constant 1: D = A·B + D), imm-scale-a = imm-scale-b = 1, imm-trans-a and imm-trans-b
// the immediates kTransA and kTransB (in that order) of Wgmma<N, kTransA, kTransB>.
int check_wgmma_inc() {
  std::string path = __FILE__;
  path = path.substr(0, path.rfind('/') + 1) + "../gemm_sm90_wgmma.inc";
  std::ifstream f(path);
  if (!f) f.open("cuda/gemm_sm90_wgmma.inc");
  if (!f) {
    std::printf("FAIL cannot read cuda/gemm_sm90_wgmma.inc\n");
    return 1;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str(), joined;
  for (size_t i = 0; i < text.size(); ++i) {  // join adjacent string literals
    if (text[i] == '"') {
      size_t j = i + 1;
      while (j < text.size() && (text[j] == ' ' || text[j] == '\n')) ++j;
      if (j < text.size() && text[j] == '"' && j > i + 1) {
        i = j;
        continue;
      }
    }
    joined += text[i];
  }
  int failures = 0;
  for (int n : {128, 256}) {
    const size_t at = joined.find("template <bool kTransA, bool kTransB> struct Wgmma<" + std::to_string(n) +
                                  ", kTransA, kTransB>");
    const size_t end = joined.find("struct Wgmma<", at + 60);
    if (at == std::string::npos) {
      std::printf("FAIL Wgmma<%d> missing\n", n);
      ++failures;
      continue;
    }
    const std::string b = joined.substr(at, end == std::string::npos ? std::string::npos : end - at);
    std::string regs, outs;
    for (int i = 0; i < n / 2; ++i) {
      regs += (i ? ", %" : "%") + std::to_string(i);
      outs += "\"+f\"(d[" + std::to_string(i) + "])";
    }
    const int h = n / 2;
    const std::string want[] = {
        "float (&d)[" + std::to_string(h) + "], uint64_t desc_a, uint64_t desc_b",
        "setp.ne.b32 p, %" + std::to_string(h + 2) + ", 0;",
        "wgmma.mma_async.sync.aligned.m64n" + std::to_string(n) + "k16.f32.bf16.bf16 {" + regs + "}, %" +
            std::to_string(h) + ", %" + std::to_string(h + 1) + ", p, 1, 1, %" + std::to_string(h + 3) + ", %" +
            std::to_string(h + 4) + ";",
        ": \"l\"(desc_a), \"l\"(desc_b), \"r\"(1), \"n\"((int)kTransA), \"n\"((int)kTransB));",
    };
    for (const std::string& w : want)
      if (b.find(w) == std::string::npos) {
        std::printf("FAIL Wgmma<%d>: no '%.80s'\n", n, w.c_str());
        ++failures;
      }
    std::string compact;
    for (char c : b)
      if (c != ' ' && c != '\n' && c != ',') compact += c;
    if (compact.find(outs) == std::string::npos) {
      std::printf("FAIL Wgmma<%d>: outputs are not \"+f\"(d[0]) … \"+f\"(d[%d]) in order\n", n, h - 1);
      ++failures;
    }
  }
  return failures;
}

// The emulation's own building blocks against the documentation's tables and definitions.
int self_test() {
  int failures = 0;
  // 5.5.7: row r of the 128B table has chunk p ^ r at position p, of the 64B table p ^ (r % 4),
  // of the 32B table p ^ (r % 2) (rows are 128-byte lines from the aligned pattern start)
  const int t128[8][8] = {{0, 1, 2, 3, 4, 5, 6, 7}, {1, 0, 3, 2, 5, 4, 7, 6}, {2, 3, 0, 1, 6, 7, 4, 5},
                          {3, 2, 1, 0, 7, 6, 5, 4}, {4, 5, 6, 7, 0, 1, 2, 3}, {5, 4, 7, 6, 1, 0, 3, 2},
                          {6, 7, 4, 5, 2, 3, 0, 1}, {7, 6, 5, 4, 3, 2, 1, 0}};
  for (int span : {32, 64, 128})
    for (int base : {0, 2048, 7 * 1024})
      for (int r = 0; r < 8; ++r)
        for (int p = 0; p < 8; ++p) {
          const int chunk = t128[r % (span / 16)][p];
          failures += swizzle(base + r * 128 + chunk * 16, span) != (uint32_t)(base + r * 128 + p * 16);
        }
  // the D fragment is a bijection onto 64 × N
  for (int n : {8, 128, 256}) {
    std::vector<int> seen((size_t)64 * n, 0);
    for (int t = 0; t < 128; ++t)
      for (int i = 0; i < n / 2; ++i) ++seen[(size_t)frag_row(t, i) * n + frag_col(t, i)];
    for (int v : seen) failures += v != 1;
  }
  // no-swizzle K-major: microsoft/MMA-Sim's hardware-tested 64×16 A (core matrices of 8 rows × 16
  // bytes, LBO 128 between the two K halves, SBO 256 between 8-row groups)
  const Descriptor d0{0, 128, 256, 0, 0};
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < 16; ++k) {
      const int elem = (r / 8) * 128 + (k / 8) * 64 + (r % 8) * 8 + k % 8;
      failures += operand_address(d0, r, k) != (uint32_t)(2 * elem);
    }
  // MN-major bf16 examples of PTX ISA 9.7.15.5.1.2.1.3 ("exact layout" in elements, (MN, K) →
  // offset; then the mode's swizzle on the byte address): no swizzle ((8,1,2),(8,2)):((1,8,64),(8,128))
  // with LBO 128, SBO 64 elements; 32B ((8,2,2),(8,2)):((1,8,128),(16,256)) with LBO 128, SBO 256;
  // 64B ((8,4,2),(8,2)):((1,8,256),(32,512)) with LBO 256, SBO 512
  struct MnExample { int span, lbo, sbo, per_mn, mn_block, k_row, k_group; };
  const MnExample mn_examples[] = {{0, 128, 64, 8, 64, 8, 128}, {32, 128, 256, 16, 128, 16, 256},
                                   {64, 256, 512, 32, 256, 32, 512}};
  for (const MnExample& e : mn_examples) {
    const Descriptor d{2048, (uint32_t)e.lbo * 2, (uint32_t)e.sbo * 2, 0, e.span};
    for (int r = 0; r < 2 * e.per_mn; ++r)
      for (int k = 0; k < 16; ++k) {
        const int elem = r % e.per_mn + (r / e.per_mn) * e.mn_block + (k % 8) * e.k_row + (k / 8) * e.k_group;
        failures += operand_address(d, r, k, true) != swizzle(2048 + 2 * elem, e.span);
      }
  }
  if (failures) std::printf("FAIL self test: %d mismatch(es)\n", failures);
  return failures ? 1 : 0;
}

// ---- one case -------------------------------------------------------------------------------------

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
float random_unit(uint64_t seed, size_t i) {
  const uint64_t h = splitmix64(seed * 0x100000001B3ull ^ splitmix64(i));
  return (float)((double)(h >> 40) * (1.0 / 8388608.0) - 1.0);
}

constexpr float kSentinel = 12345.5f;
constexpr size_t kGuard = 37;

// n values at a 64-byte aligned start, then kGuard sentinels
template <typename V>
struct Buffer {
  std::vector<V> storage;
  size_t n, offset;
  Buffer(size_t n_, V fill, V guard) : storage(n_ + kGuard + 64), n(n_) {
    offset = (size_t)((64 - reinterpret_cast<uintptr_t>(storage.data()) % 64) % 64) / sizeof(V);
    std::fill(storage.begin(), storage.end(), guard);
    std::fill(storage.begin() + offset, storage.begin() + offset + n, fill);
  }
  V* data() { return storage.data() + offset; }
  V& operator[](size_t i) { return storage[offset + i]; }
  bool guard_ok(V guard) const {
    for (size_t i = 0; i < kGuard; ++i)
      if (std::memcmp(&storage[offset + n + i], &guard, sizeof(V))) return false;
    return true;
  }
};

enum class Epi { kPlain, kGeluForward, kGeluBackward };
const char* epi_name(Epi e) { return e == Epi::kGeluForward ? " gelu-fwd" : e == Epi::kGeluBackward ? " gelu-bwd" : ""; }

struct Case {
  int bn, M, N, K, splits, k_split, sms;
  bool accumulate, bias, residual;
  int lda_extra, ldc_extra;
  Epi epi = Epi::kPlain;
  bool a_sums = false;  // the dweight GEMM: A converted from fp32 dout (K, M) with the bias gradient's row sums
  bool bf16 = false;    // bf16 activations (issue 11): gelu_inp bf16, C and gelu_out bf16 when C is assigned
                        // without a residual (stored once rounded: within 2^-8 · (|want| + tol) more)
  bool a_mn = false;    // A stored MN-major: (K, M) at lda = bf16_ld(M) + lda_extra (the weight-gradient GEMM)
  bool b_mn = false;    // B stored MN-major: (K, N) at ldb = bf16_ld(N) + 8 (the input-gradient GEMM's weight)
};

// The a_sums cases' A: fp32 dout stored (K, M) (row stride M + 3) through gemm_bf16.cuh's
// conversion kernel with row sums (bf16_convert_emulate.h) into A (M, bf16_ld(K)); checks the
// copy (round to nearest even, zero padding) and that a_sums = a_sums0 + the row sums equals the
// separate column-sum pass bit for bit and the double sum to 1e-6 relative.
bool check_a_sums(uint16_t* A, std::vector<float>& a_sums0, std::vector<float>& a_sums, int M, int K, uint64_t seed) {
  const int ld_dout = M + 3, lda = emae::cuda::bf16_ld(K);
  std::vector<float> dout((size_t)K * ld_dout);
  for (size_t i = 0; i < dout.size(); ++i) dout[i] = 4.f * random_unit(seed + 6, i);
  for (int m = 0; m < M; ++m) a_sums[m] = a_sums0[m] = random_unit(seed + 7, m);
  bool ok = emae::dev::emulate_convert_with_row_sums(A, a_sums.data(), dout.data(), M, K, ld_dout);
  if (!ok) std::printf("FAIL a_sums conversion: a barrier not reached by every thread\n");
  long long bad_copy = 0, bad_bits = 0, bad_exact = 0;
  for (int m = 0; m < M; ++m) {
    for (int k = 0; k < lda; ++k)
      bad_copy += A[(size_t)m * lda + k] != (k < K ? float_to_bf16(dout[(size_t)k * ld_dout + m]) : 0);
    const float want = a_sums0[m] + emae::dev::column_sum_reference(dout.data(), K, ld_dout, m);
    bad_bits += std::memcmp(&a_sums[m], &want, 4) != 0;
    double exact = a_sums0[m], mag = std::fabs(a_sums0[m]);
    for (int k = 0; k < K; ++k) exact += dout[(size_t)k * ld_dout + m], mag += std::fabs(dout[(size_t)k * ld_dout + m]);
    bad_exact += !(std::fabs(a_sums[m] - exact) <= 1e-6 * mag + 1e-6);
  }
  if (bad_copy || bad_bits || bad_exact)
    std::printf("FAIL a_sums M=%d K=%d: %lld bf16 copies wrong, %lld sums differ from column_sum_accumulate's, %lld far "
                "from the double sum\n", M, K, bad_copy, bad_bits, bad_exact);
  return ok && !bad_copy && !bad_bits && !bad_exact;
}

template <int BN>
int run_case(const Case& cs, uint64_t seed, Cta& cta, int policy) {
  using T = sm90::Traits<BN>;
  const int M = cs.M, N = cs.N, K = cs.K;
  const int lda = cs.a_mn ? emae::cuda::bf16_ld(M) + cs.lda_extra : emae::cuda::bf16_ld(K) + (cs.a_sums ? 0 : cs.lda_extra),
            ldb = cs.b_mn ? emae::cuda::bf16_ld(N) + 8 : emae::cuda::bf16_ld(K), ldc = N + cs.ldc_extra;
  // element (row, k) of A (M, K) and B (N, K) in their stored layouts; NaN wherever no element is
  Buffer<uint16_t> A((size_t)(cs.a_mn ? K : M) * lda, kBf16NaN, kBf16NaN),
      B((size_t)(cs.b_mn ? K : N) * ldb, kBf16NaN, kBf16NaN);
  auto a_at = [&](int r, int k) { return cs.a_mn ? (size_t)k * lda + r : (size_t)r * lda + k; };
  auto b_at = [&](int r, int k) { return cs.b_mn ? (size_t)k * ldb + r : (size_t)r * ldb + k; };
  for (int r = 0; r < N; ++r)
    for (int k = 0; k < K; ++k) B[b_at(r, k)] = float_to_bf16(random_unit(seed + 1, (size_t)r * ldb + k));
  std::vector<float> a_sums0(M), a_sums(M);
  std::string error;
  if (!cs.a_sums) {
    for (int r = 0; r < M; ++r)
      for (int k = 0; k < K; ++k) A[a_at(r, k)] = float_to_bf16(random_unit(seed, (size_t)r * lda + k));
  } else if (!check_a_sums(A.data(), a_sums0, a_sums, M, K, seed)) {
    error = "the conversion of A with row sums is wrong (FAIL lines above)";
  }
  Buffer<float> C((size_t)M * ldc, std::nanf(""), kSentinel), bias(N, 0.f, kSentinel),
      residual((size_t)M * ldc, 0.f, kSentinel), partial((size_t)cs.splits * M * N, std::nanf(""), kSentinel),
      gelu_out((size_t)M * ldc, std::nanf(""), kSentinel), gelu_inp((size_t)M * ldc, 0.f, kSentinel);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < ldc; ++c) {
      const size_t at = (size_t)r * ldc + c;
      C[at] = c >= N ? kSentinel : cs.accumulate ? random_unit(seed + 2, at) : std::nanf("");
      residual[at] = random_unit(seed + 3, at);
      gelu_out[at] = c >= N ? kSentinel : std::nanf("");
      gelu_inp[at] = 3.f * random_unit(seed + 5, at);
    }
  for (int c = 0; c < N; ++c) bias[c] = random_unit(seed + 4, c);
  const std::vector<float> C0(C.storage.begin() + C.offset, C.storage.begin() + C.offset + C.n);
  // bf16 cases: gelu_inp's bf16 values (kept in the fp32 buffer for the reference); a bf16 C and
  // gelu_out start as the bf16 copies of the poisoned ones (sentinel → bf16(sentinel)) and are
  // widened back into them after the run
  const bool out16 = cs.bf16 && !cs.accumulate && !cs.residual;
  const uint16_t sentinel16 = float_to_bf16(kSentinel);
  Buffer<uint16_t> C16(out16 ? C.n : 0, kBf16NaN, kBf16NaN), gelu_out16(out16 ? gelu_out.n : 0, kBf16NaN, kBf16NaN),
      gelu_inp16(cs.bf16 ? gelu_inp.n : 0, 0, kBf16NaN);
  for (size_t i = 0; cs.bf16 && i < gelu_inp.n; ++i) gelu_inp[i] = bf16_to_float(gelu_inp16[i] = float_to_bf16(gelu_inp[i]));
  for (size_t i = 0; out16 && i < C.n; ++i) {
    C16[i] = C[i] == kSentinel ? sentinel16 : kBf16NaN;  // assigned: NaN-poisoned
    gelu_out16[i] = gelu_out[i] == kSentinel ? sentinel16 : kBf16NaN;
  }

  GemmBf16Params p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.A = reinterpret_cast<const bf16_t*>(A.data());
  p.lda = lda;
  p.B = reinterpret_cast<const bf16_t*>(B.data());
  p.ldb = ldb;
  p.a_mn_major = cs.a_mn;
  p.b_mn_major = cs.b_mn;
  p.C = C.data();
  p.ldc = ldc;
  p.accumulate = cs.accumulate;
  p.bias = cs.bias ? bias.data() : nullptr;
  p.residual = cs.residual ? residual.data() : nullptr;
  p.gelu_out = cs.epi == Epi::kGeluForward ? gelu_out.data() : nullptr;
  p.gelu_inp = cs.epi == Epi::kGeluBackward ? gelu_inp.data() : nullptr;
  if (cs.bf16 && cs.epi == Epi::kGeluBackward) p.gelu_inp = emae::ActIn(gelu_inp16.data(), emae::DType::kBF16);
  if (out16) {
    p.C = emae::Act(C16.data(), emae::DType::kBF16);
    if (cs.epi == Epi::kGeluForward) p.gelu_out = emae::Act(gelu_out16.data(), emae::DType::kBF16);
  }
  p.splits = cs.splits;
  p.k_split = cs.k_split;
  p.partial = cs.splits > 1 ? partial.data() : nullptr;
  if ((cs.a_mn || cs.b_mn) && error.empty()) {
    // the MN-major cases go through gemm_dispatch.cuh as the backend's GEMMs do: the same operands
    // as a GemmParams (A stored (K, M) is trans_a; B stored (K, N) is !trans_b) must come out of
    // convert_operands on sm90 as p's operands, read in place (no copy, no kernel launched), and
    // need copies on sm80
    emae::cuda::GemmParams g;
    g.trans_a = cs.a_mn;
    g.trans_b = !cs.b_mn;
    g.M = M; g.N = N; g.K = K;
    g.A = emae::ActIn(A.data(), emae::DType::kBF16); g.lda = lda;
    g.B = emae::ActIn(B.data(), emae::DType::kBF16); g.ldb = ldb;
    g.C = p.C; g.ldc = ldc; g.accumulate = p.accumulate; g.bias = p.bias; g.residual = p.residual;
    g.gelu_out = p.gelu_out; g.gelu_inp = p.gelu_inp;
    try {
      emae::cuda::check_gemm_params(g);
      GemmBf16Params q = emae::cuda::convert_operands(g, nullptr, 0);
      if (emae::cuda::gemm_operand_elems(g) != 0 || q.A != p.A || q.lda != p.lda ||
          q.a_mn_major != p.a_mn_major || q.B != p.B || q.ldb != p.ldb || q.b_mn_major != p.b_mn_major)
        error = "gemm_dispatch.cuh does not hand the MN-major operands to the bf16 kernels in place";
      q.splits = p.splits;
      q.k_split = p.k_split;
      q.partial = p.partial;
      p = q;
    } catch (const std::exception& e) {
      error = std::string("dispatch: ") + e.what();
    }
  }

  Outputs out{&p, std::vector<int>((size_t)M * N), std::vector<int>((size_t)cs.splits * M * N)};
  long long steps = 0, mma_ops = 0, tma_ops = 0, producer_blocked = 0, consumer_blocked = 0;
  sm90::LaunchPlan plan{};
  if (error.empty()) try {
    emae::cuda::check_bf16_params(p);
    plan = sm90::launch_plan<BN>(p, cs.sms);
    cta.maps[0] = emulate_encode(plan.map_a);
    cta.maps[1] = emulate_encode(plan.map_b);
    cta.allocations = {{reinterpret_cast<const uint8_t*>(A.data()), A.n * 2},
                       {reinterpret_cast<const uint8_t*>(B.data()), B.n * 2}};
    if (T::kSmemBytes > 227 * 1024) throw EmulationError("dynamic shared memory above 227 KB");
    cta.threads = T::kThreads;
    cta.launch_regs = 65536 / T::kThreads / 8 * 8;  // the __launch_bounds__(kThreads, 1) maximum ptxas allocates
    cta.grid = (unsigned)plan.grid;
    cta.out = &out;
    cta.policy = &kPolicies[policy];
    cta.rng.seed(seed * 31 + (uint64_t)policy);
    cta.steps = cta.mma_ops = cta.tma_ops = cta.producer_blocked = cta.consumer_blocked = 0;
    for (int b = 0; b < plan.grid; ++b) {
      cta.block = (unsigned)b;
      // the dynamic allocation's start: 16-byte aligned, rarely 1024-byte aligned
      cta.dyn_base = 16 * (uint32_t)((seed + 7 * b + 3) % 64);
      cta.dyn_bytes = (uint32_t)T::kSmemBytes;
      cta.run([&](int tid) {
        HostOps ops{&cta, tid};
        sm90::with_operand_majors(plan.params, [&](auto ta, auto tb) {
          sm90::cta_body<BN, decltype(ta)::value, decltype(tb)::value>(plan.params, plan.items, plan.tiles_n,
                                                                      cta.smem.data() + cta.dyn_base, ops);
        });
      });
    }
    steps = cta.steps;
    mma_ops = cta.mma_ops;
    tma_ops = cta.tma_ops;
    producer_blocked = cta.producer_blocked;
    consumer_blocked = cta.consumer_blocked;
  } catch (const std::exception& e) {
    error = e.what();
  }

  // gemm_bf16_reduce on the host: gemm.cuh's reduce_output, the reduce kernel's body, per output
  if (error.empty() && cs.splits > 1)
    for (size_t idx = 0; idx < (size_t)M * N; ++idx) emae::cuda::reduce_output(p, cs.splits, partial.data(), idx);
  for (size_t i = 0; out16 && i < C.n; ++i) {
    C[i] = C16[i] == sentinel16 ? kSentinel : bf16_to_float(C16[i]);
    gelu_out[i] = gelu_out16[i] == sentinel16 ? kSentinel : bf16_to_float(gelu_out16[i]);
  }

  // reference (double) and checks
  double max_err = 0, worst_ratio = 0;
  long long bad = 0, miscount = 0;
  for (int r = 0; r < M && error.empty(); ++r)
    for (int c = 0; c < N; ++c) {
      double want = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double x = (double)bf16_to_float(A[a_at(r, k)]) * bf16_to_float(B[b_at(c, k)]);
        want += x;
        mag += std::fabs(x);
      }
      const size_t at = (size_t)r * ldc + c;
      if (p.accumulate) want += C0[at], mag += std::fabs(C0[at]);
      if (p.bias) want += bias[c], mag += std::fabs(bias[c]);
      if (p.residual) want += residual[at], mag += std::fabs(residual[at]);
      // |err| ≤ 1e-6 · Σ|terms| + 1e-7 (fp32 sums here land within 1e-7 · Σ|terms|); the GELU outputs:
      // that bound times max|gelu'| (1.13) plus a few ulp of the float erf/exp, tight enough that the
      // tanh approximation of GELU (off by up to 3e-4) fails
      auto check = [&](float got, double w, double tol) {
        if (out16) tol += (fabs(w) + tol) / 256;  // the bf16 store's rounding (unit roundoff 2^-8)
        const double err = std::fabs((double)got - w);
        if (!(err <= tol)) ++bad;
        if (err == err) max_err = std::max(max_err, err);
        worst_ratio = std::max(worst_ratio, err != err ? INFINITY : err / tol);
      };
      const double tol = 1e-6 * mag + 1e-7;
      if (cs.epi == Epi::kGeluBackward) {
        const double w = want * emae::gelu_grad((double)gelu_inp[at]);
        check(C[at], w, 1.13 * tol + 1e-6 * (1 + std::fabs(w)));
      } else {
        check(C[at], want, tol);
      }
      if (cs.epi == Epi::kGeluForward) {
        const double w = emae::gelu(want);
        check(gelu_out[at], w, 1.13 * tol + 1e-6 * (1 + std::fabs(w)));
      } else {
        bad += !std::isnan(gelu_out[at]);  // never written unless asked
      }
    }
  if (error.empty()) {
    for (int v : out.count_c) miscount += cs.splits == 1 && v != 1;
    for (int v : out.count_partial) miscount += cs.splits > 1 && v != 1;
  }
  bool guards = A.guard_ok(kBf16NaN) && B.guard_ok(kBf16NaN) && C.guard_ok(kSentinel) && bias.guard_ok(kSentinel) &&
                residual.guard_ok(kSentinel) && partial.guard_ok(kSentinel) && gelu_out.guard_ok(kSentinel) &&
                gelu_inp.guard_ok(kSentinel) && C16.guard_ok(kBf16NaN) && gelu_out16.guard_ok(kBf16NaN) &&
                gelu_inp16.guard_ok(kBf16NaN);
  for (int r = 0; r < M; ++r)
    for (int c = N; c < ldc; ++c)
      guards &= std::memcmp(&C[(size_t)r * ldc + c], &kSentinel, 4) == 0 &&
                std::memcmp(&gelu_out[(size_t)r * ldc + c], &kSentinel, 4) == 0;
  const bool ok = error.empty() && bad == 0 && miscount == 0 && guards;
  std::printf("%s BN=%d M=%d N=%d K=%d splits=%d k_split=%d grid=%d%s%s%s%s%s%s%s%s lda=%d ldc=%d [%s]  max err %.2e"
              " (%.2f of tol)"
              "  %lld bad, %lld miscounted  [%lld steps, %lld wgmma, %lld TMA, blocked waits: producer %lld,"
              " consumers %lld]%s%s%s\n",
              ok ? "PASS" : "FAIL", BN, M, N, K, cs.splits, cs.k_split, plan.grid, cs.accumulate ? " acc" : "",
              cs.bias ? " bias" : "", cs.residual ? " res" : "", epi_name(cs.epi), cs.a_sums ? " a_sums" : "", !cs.bf16 ? "" : out16 ? " bf16 in/out" : " bf16 in", cs.a_mn ? " A MN-major" : "", cs.b_mn ? " B MN-major" : "", lda, ldc, kPolicies[policy].name, max_err, worst_ratio,
              bad, miscount, steps, mma_ops, tma_ops, producer_blocked, consumer_blocked,
              guards ? "" : "  GUARD/PADDING OVERWRITTEN",
              error.empty() ? "" : "  ERROR: ", error.c_str());
  std::fflush(stdout);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  uint64_t seed = 1000;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) {
      seed = std::strtoull(argv[++i], nullptr, 10);  // other inputs, dynamic bases and schedules
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--seed N]\n", argv[0]);
      return 2;
    }
  }
  int failures = self_test() + check_wgmma_inc();
  std::printf("checks: swizzle tables of PTX ISA 5.5.7, D-fragment bijection, no-swizzle K-major layout, the ISA's "
              "MN-major bf16 layout examples, the "
              "operand lists of gemm_sm90_wgmma.inc: %s\n", failures ? "FAILED" : "ok");
  Cta* cta = new Cta();
  //  bn   M    N    K  splits k_split sms  acc   bias   res  lda+ ldc+
  const std::vector<Case> cases = {
      {128, 1, 1, 1, 1, 1, 1, false, false, false, 0, 0},
      {128, 7, 65, 129, 1, 129, 2, true, true, false, 8, 3},
      {128, 64, 128, 64, 1, 64, 1, false, false, false, 0, 0},
      {128, 65, 129, 200, 1, 200, 3, false, true, true, 0, 1},
      {128, 128, 7, 300, 3, 128, 1, true, false, false, 16, 0},
      {128, 129, 200, 65, 1, 65, 2, false, false, true, 0, 0},
      {128, 200, 300, 128, 1, 128, 3, false, false, false, 0, 2},
      {128, 300, 64, 300, 3, 128, 2, true, true, true, 8, 0},
      {128, 300, 300, 7, 1, 7, 1, false, true, false, 0, 0},
      {256, 1, 7, 65, 1, 65, 1, true, false, false, 0, 1},
      {256, 65, 300, 129, 3, 64, 2, true, true, true, 0, 0},
      {256, 129, 300, 200, 1, 200, 3, false, false, false, 8, 0},
      {256, 200, 256, 64, 1, 64, 1, false, true, true, 0, 0},
      {256, 128, 129, 300, 1, 300, 2, false, true, false, 0, 5},
      {256, 7, 1, 300, 3, 128, 3, false, false, true, 24, 0},
      {256, 300, 200, 129, 1, 129, 2, true, false, false, 0, 0},
      {128, 65, 70, 150, 1, 0, 2, false, true, false, 0, 0},  // k_split 0: "all of K" (GemmBf16Params)
      // fused epilogues: GELU forward (C = pre-activation, gelu_out) and backward (C ⊙ gelu'(gelu_inp)),
      // split-K off and on (the reduce applies the GELU once); the dweight GEMM with the bias
      // gradient's row sums fused into A's conversion
      {128, 130, 70, 77, 1, 77, 2, false, true, false, 0, 3, Epi::kGeluForward},
      {128, 33, 129, 257, 3, 128, 2, false, true, true, 8, 0, Epi::kGeluForward},
      {256, 65, 300, 129, 1, 129, 2, false, true, false, 0, 1, Epi::kGeluForward},
      {128, 129, 40, 100, 1, 100, 3, false, false, false, 0, 2, Epi::kGeluBackward},
      {128, 70, 33, 300, 3, 128, 2, false, false, false, 8, 0, Epi::kGeluBackward},
      {256, 7, 200, 65, 2, 64, 1, true, true, true, 0, 0, Epi::kGeluBackward},
      {128, 70, 50, 300, 1, 300, 2, true, false, false, 0, 1, Epi::kPlain, true},
      {128, 33, 129, 600, 3, 256, 2, true, false, false, 0, 0, Epi::kPlain, true},
      // bf16 activations: bf16 C and gelu_out (fc1), bf16 C ⊙ gelu'(bf16 gelu_inp) (fc2's dinp), plain
      // bf16 C (qkv), split-K off and on (the reduce stores the bf16 C); bf16 gelu_inp with an fp32 C
      {128, 130, 70, 77, 1, 77, 2, false, true, false, 0, 3, Epi::kGeluForward, false, true},
      {256, 65, 300, 129, 3, 64, 2, false, true, false, 0, 1, Epi::kGeluForward, false, true},
      {128, 129, 40, 100, 1, 100, 3, false, false, false, 0, 2, Epi::kGeluBackward, false, true},
      {128, 70, 33, 300, 3, 128, 2, false, false, false, 8, 0, Epi::kGeluBackward, false, true},
      {256, 129, 300, 200, 1, 200, 3, false, true, false, 8, 0, Epi::kPlain, false, true},
      {256, 7, 200, 65, 2, 64, 1, true, true, true, 0, 0, Epi::kGeluBackward, false, true},
      // MN-major operands read as stored (wgmma imm-trans, MN-major descriptors, 64-element TMA
      // boxes): B (the input-gradient GEMM: dout · W, W stored (N_out, K_in)), A and both (the
      // weight-gradient GEMM: doutᵀ · inp, reduction over rows); odd sizes, edge tiles, split-K
      {128, 130, 70, 77, 1, 77, 2, false, false, false, 0, 3, Epi::kPlain, false, false, false, true},
      {128, 65, 129, 200, 1, 200, 3, false, true, true, 0, 1, Epi::kPlain, false, false, false, true},
      {256, 129, 300, 129, 3, 64, 2, false, true, false, 0, 0, Epi::kGeluBackward, false, true, false, true},
      {128, 70, 33, 300, 1, 300, 2, true, false, false, 8, 0, Epi::kPlain, false, false, true, false},
      {128, 200, 7, 65, 1, 65, 1, false, false, false, 0, 2, Epi::kGeluForward, false, true, true, false},
      {128, 129, 200, 300, 3, 128, 2, true, false, false, 0, 0, Epi::kPlain, false, false, true, true},
      {256, 7, 65, 129, 1, 129, 3, true, true, false, 16, 1, Epi::kPlain, false, false, true, true},
      {128, 1, 1, 1, 1, 1, 1, false, false, false, 0, 0, Epi::kPlain, false, false, true, true},
      {128, 300, 130, 600, 2, 320, 2, true, true, false, 8, 0, Epi::kPlain, false, false, true, true},
  };
  const std::vector<Case> quick_cases = {cases[1], cases[4], cases[7], cases[10], cases[11], cases[17], cases[21], cases[24],
                                          cases[26], cases[29], cases[33], cases[35], cases[37]};
  int n = 0;
  for (const Case& c : quick ? quick_cases : cases) {
    for (int rep = 0; rep < 2; ++rep) {
      const int policy = (n + rep * 2) % kNumPolicies;  // each case under two different policies
      seed += 10;
      failures += c.bn == 128 ? run_case<128>(c, seed, *cta, policy) : run_case<256>(c, seed, *cta, policy);
    }
    ++n;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
