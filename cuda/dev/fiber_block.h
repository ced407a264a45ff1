// The fiber scheduler shared by the CPU emulations (attention_tc_emulate.cu, attention_simt_emulate.cu,
// elementwise_bf16_emulate.cu, bf16_convert_emulate.h): the threads of one block (Threads, 128 unless
// given, whole warps) run as cooperative fibers (ucontext) on one host thread. A fiber runs until it
// parks at a collective (wait(tid, op)); the scheduler runs one warp's lanes until all 32 park,
// requires them at the same operation (else: divergence), and has the derived class complete warp
// collectives (complete(warp, op)) until the warp reaches a barrier or exits. Barriers open when all
// the block's threads wait at one; the warps run one after another, each as far as it goes, in an
// order shuffled per barrier phase, so a missing barrier lets a warp read shared rows the others have
// not staged yet, or overwrite rows they still read.
// Shared memory is the caller's buffer: NaN-poisoned (0xff bytes) per block, and the bytes past the
// block's dynamic allocation must stay untouched.
// Op: an enum with kRun, kSync and kDone (the scheduler's states) besides the collectives.
// Lane: a thread's operands and results of the collectives, t[tid].
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cstddef>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace emae::dev {

struct EmulationError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class Op, class Lane, int Threads = 128>
class FiberBlock {
 public:
  static_assert(Threads > 0 && Threads % 32 == 0, "a block is whole warps");
  static constexpr int kThreads = Threads;
  static constexpr size_t kStack = 256 * 1024;

  FiberBlock() : stacks_(kThreads, std::vector<char>(kStack)) {}
  virtual ~FiberBlock() = default;
  FiberBlock(const FiberBlock&) = delete;
  FiberBlock& operator=(const FiberBlock&) = delete;

  int bx = 0, by = 0;
  Lane t[kThreads];
  std::mt19937_64 rng{12345};
  long long collectives = 0;

  // the fiber running now (-1: the scheduler)
  int running() const { return running_; }

  // runs body(tid) for every thread of block (bx, by); smem: `capacity` bytes of which the first
  // `bytes` are the block's dynamic shared memory, the rest a guard
  void run_block(int bx_, int by_, unsigned char* smem, size_t capacity, size_t bytes, std::function<void(int)> body) {
    if (bytes > capacity) throw EmulationError("shared memory: the block needs more than the buffer holds");
    bx = bx_;
    by = by_;
    std::fill(smem, smem + capacity, (unsigned char)0xff);  // bf16 and fp32 NaN: unstaged reads poison results
    body_ = std::move(body);
    current_ = this;
    for (int tid = 0; tid < kThreads; ++tid) {
      t[tid] = Lane{};
      op_[tid] = Op::kRun;
      ucontext_t& ctx = ctx_[tid];
      getcontext(&ctx);
      ctx.uc_stack.ss_sp = stacks_[tid].data();
      ctx.uc_stack.ss_size = kStack;
      ctx.uc_link = &sched_;
      makecontext(&ctx, reinterpret_cast<void (*)()>(&FiberBlock::entry), 1, tid);
    }
    int order[kThreads / 32];
    for (int w = 0; w < kThreads / 32; ++w) order[w] = w;
    for (;;) {
      std::shuffle(order, order + kThreads / 32, rng);
      for (int w : order) run_warp(w);
      int done = 0, at_sync = 0;
      for (int tid = 0; tid < kThreads; ++tid) {
        done += op_[tid] == Op::kDone;
        at_sync += op_[tid] == Op::kSync;
      }
      if (done == kThreads) break;
      if (at_sync + done != kThreads) throw EmulationError("scheduler: a thread is neither at a barrier nor done");
      if (done > 0)
        throw EmulationError("block (" + std::to_string(bx) + ", " + std::to_string(by) + "): " +
                             std::to_string(at_sync) + " threads wait at a barrier that " + std::to_string(done) +
                             " exited threads never reach");
      for (int tid = 0; tid < kThreads; ++tid) op_[tid] = Op::kRun;  // the barrier opens
    }
    for (size_t i = bytes; i < capacity; ++i)
      if (smem[i] != 0xff) throw EmulationError("shared memory written past the dynamic allocation");
  }

  // from a fiber: park at a collective until the scheduler completes it
  void wait(int tid, Op op) {
    op_[tid] = op;
    swapcontext(&ctx_[tid], &sched_);
  }

 protected:
  // completes the collective `op` that all 32 lanes of warp w wait at (t[32w .. 32w + 31]);
  // throws EmulationError for an operation it does not know
  virtual void complete(int w, Op op) = 0;

 private:
  static void entry(int tid) {
    current_->body_(tid);
    current_->op_[tid] = Op::kDone;
  }

  // run warp w's lanes until each waits at a barrier or exited, completing its collectives
  void run_warp(int w) {
    for (;;) {
      for (int lane = 0; lane < 32; ++lane) {
        const int tid = 32 * w + lane;
        if (op_[tid] != Op::kRun) continue;
        running_ = tid;
        swapcontext(&sched_, &ctx_[tid]);
        running_ = -1;
      }
      const Op op = op_[32 * w];
      for (int lane = 1; lane < 32; ++lane)
        if (op_[32 * w + lane] != op)
          throw EmulationError("warp " + std::to_string(w) + ": lane 0 at " + op_name(op) + ", lane " +
                               std::to_string(lane) + " at " + op_name(op_[32 * w + lane]) + " (divergence)");
      if (op == Op::kSync || op == Op::kDone) return;
      complete(w, op);
      ++collectives;
      for (int lane = 0; lane < 32; ++lane) op_[32 * w + lane] = Op::kRun;
    }
  }

  static inline FiberBlock* current_ = nullptr;
  std::vector<std::vector<char>> stacks_;
  ucontext_t ctx_[kThreads];
  Op op_[kThreads];
  ucontext_t sched_;
  std::function<void(int)> body_;
  int running_ = -1;
};

}  // namespace emae::dev
