// The CUDA event clock of the profiling decorator (op_timer.h).
#include "cuda/op_timer.h"

#include <cuda_runtime.h>

#include <deque>
#include <vector>

#include "cuda/common.cuh"

namespace emae::cuda {
namespace {

class EventClock final : public OpClock {
 public:
  EventClock(int device, cudaStream_t stream) : device_(device), stream_(stream) {}
  ~EventClock() override {
    cudaSetDevice(device_);
    // an event still pending on the device is freed once the device has passed it
    for (Window& w : windows_) recycle(w);
    recycle(open_);
    if (op_start_) free_.push_back(op_start_);
    for (cudaEvent_t e : free_) cudaEventDestroy(e);
  }

  const char* kind() const override { return "cuda-events"; }

  void begin_step() override {
    bind();
    resolve(false);  // what the device has finished: keeps the pending windows (and events) few
    recycle(open_);
    open_.begin = take();
    EMAE_CUDA_CHECK(cudaEventRecord(open_.begin, stream_));
  }

  void end_step() noexcept override {
    try {
      open_.end = take();
      if (cudaEventRecord(open_.end, stream_) == cudaSuccess) {
        windows_.push_back(std::move(open_));
        open_ = Window{};
        return;
      }
      cudaGetLastError();  // the failed record's error is the profiler's, not the next launch check's
    } catch (...) {
    }
    recycle(open_);  // the window is dropped: its step time cannot be known
  }

  void begin_op() override {
    op_start_ = take();
    EMAE_CUDA_CHECK(cudaEventRecord(op_start_, stream_));
  }

  void end_op(int row) override {
    cudaEvent_t end = take();
    const cudaError_t err = cudaEventRecord(end, stream_);
    if (err != cudaSuccess) {
      free_.push_back(end);
      check(err, "cudaEventRecord (profiling: the end of an op)", __FILE__, __LINE__);
    }
    open_.ops.push_back({op_start_, end, row});
    op_start_ = nullptr;
  }

  void cancel_op() noexcept override {
    if (op_start_) free_.push_back(op_start_);  // recorded or not, it can be recorded again
    op_start_ = nullptr;
  }

  void collect(std::vector<double>& row_ms, double& step_ms, bool wait) override {
    bind();
    resolve(wait);
    times_.move_to(row_ms, step_ms);
  }

 private:
  struct OpEvents {
    cudaEvent_t start, end;
    int row;
  };
  struct Window {
    cudaEvent_t begin = nullptr, end = nullptr;
    std::vector<OpEvents> ops;
  };

  void bind() { EMAE_CUDA_CHECK(cudaSetDevice(device_)); }

  // An event from the pool, or a new one (with timing; on the current device, the backend's).
  cudaEvent_t take() {
    if (!free_.empty()) {
      cudaEvent_t e = free_.back();
      free_.pop_back();
      return e;
    }
    cudaEvent_t e = nullptr;
    EMAE_CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }

  void recycle(Window& w) noexcept {
    for (cudaEvent_t e : {w.begin, w.end})
      if (e) free_.push_back(e);
    for (const OpEvents& op : w.ops) {
      free_.push_back(op.start);
      free_.push_back(op.end);
    }
    w = Window{};
  }

  // Turns the finished windows' events into times, oldest first; with wait every window is
  // waited for, else the first one the device has not reached stops it (the stream runs them in
  // order, so the later ones are not done either).
  void resolve(bool wait) {
    while (!windows_.empty()) {
      Window& w = windows_.front();
      if (wait) {
        EMAE_CUDA_CHECK(cudaEventSynchronize(w.end));
      } else {
        const cudaError_t status = cudaEventQuery(w.end);
        if (status == cudaErrorNotReady) {
          cudaGetLastError();  // "not yet" is no error: keep it from the next launch check
          return;
        }
        EMAE_CUDA_CHECK(status);
      }
      float ms = 0;
      EMAE_CUDA_CHECK(cudaEventElapsedTime(&ms, w.begin, w.end));
      std::vector<float> op_ms(w.ops.size());  // all read before any is added: a failure adds nothing
      for (size_t i = 0; i < w.ops.size(); ++i) EMAE_CUDA_CHECK(cudaEventElapsedTime(&op_ms[i], w.ops[i].start, w.ops[i].end));
      times_.add_step(ms);
      for (size_t i = 0; i < w.ops.size(); ++i) times_.add_op(w.ops[i].row, op_ms[i]);
      recycle(w);
      windows_.pop_front();
    }
  }

  int device_;
  cudaStream_t stream_;
  std::vector<cudaEvent_t> free_;
  Window open_;                  // the step being recorded
  cudaEvent_t op_start_ = nullptr;  // the op being recorded
  std::deque<Window> windows_;   // recorded, not yet resolved
  MeasuredTimes times_;          // resolved, not yet collected
};

}  // namespace

std::unique_ptr<OpClock> make_event_clock(const CudaPlacement& where) {
  if (where.device < 0 || !where.stream) throw std::invalid_argument("make_event_clock: not a CUDA backend");
  EMAE_CUDA_CHECK(cudaSetDevice(where.device));
  return std::make_unique<EventClock>(where.device, static_cast<cudaStream_t>(where.stream));
}

}  // namespace emae::cuda
