// Every model computation runs on one long-lived thread, whichever libuv thread queued it.
// Why: OpenMP (libgomp) keeps a thread pool per master thread. Run from libuv's pool, steps had
// up to four masters, so four pools: more OpenMP threads than CPUs, which makes libgomp's idle
// threads sleep almost at once and cost a futex wake-up for every op (~5% of a CPU step).
// One master keeps one pool, and its threads spin between the ops of a step.
#pragma once
#include <functional>

namespace emae {

// Runs fn on the compute thread and waits for it; an exception fn throws is rethrown here.
// Jobs from several callers run one at a time, in arrival order. Called from the compute thread
// itself, fn runs inline.
void run_on_compute_thread(const std::function<void()>& fn);

}  // namespace emae
