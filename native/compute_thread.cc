#include "compute_thread.h"

#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

namespace emae {
namespace {

struct Job {
  const std::function<void()>* fn;
  std::exception_ptr error;
  bool done = false;
};

class ComputeThread {
 public:
  ComputeThread() : thread_([this] { loop(); }) {
    id_ = thread_.get_id();
    thread_.detach();  // lives until the process exits; never joined (see instance())
  }

  void run(const std::function<void()>& fn) {
    if (std::this_thread::get_id() == id_) return fn();
    Job job{&fn, nullptr, false};
    std::unique_lock<std::mutex> lock(mutex_);
    queue_.push_back(&job);
    wake_.notify_all();
    done_.wait(lock, [&] { return job.done; });
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return !queue_.empty(); });
      Job* job = queue_.front();
      queue_.pop_front();
      lock.unlock();
      try {
        (*job->fn)();
      } catch (...) {
        job->error = std::current_exception();
      }
      lock.lock();
      job->done = true;
      done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::deque<Job*> queue_;
  std::thread thread_;
  std::thread::id id_;
};

ComputeThread& instance() {
  // Leaked on purpose: a static std::thread still running at exit would terminate the process.
  static ComputeThread* t = new ComputeThread();
  return *t;
}

}  // namespace

void run_on_compute_thread(const std::function<void()>& fn) { instance().run(fn); }

}  // namespace emae
