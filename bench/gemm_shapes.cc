// The GEMMs of one CPU training step, timed alone (bench/gemm_shapes.sh builds and runs this next
// to bench/torch_gemm_shapes.py). Reads "M N K trans_a trans_b count" lines on stdin (the shapes
// of the step, from bench/gemm_shapes.py), prints one line per shape with the best of `reps`
// runs, then a TOTAL line weighted by count. Weight-gradient shapes (trans_a) accumulate, as in
// the step.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/gemm.h"

int main(int argc, char** argv) {
  using emae::cpu::GemmParams;
  struct Shape { int M, N, K, ta, tb, count; };
  std::vector<Shape> shapes;
  Shape s;
  while (std::scanf("%d %d %d %d %d %d", &s.M, &s.N, &s.K, &s.ta, &s.tb, &s.count) == 6) shapes.push_back(s);
  const int reps = argc > 1 ? std::atoi(argv[1]) : 10;
  double total_s = 0, total_flop = 0;
  for (const Shape& x : shapes) {
    std::vector<float> A((size_t)x.M * x.K), B((size_t)x.K * x.N), C((size_t)x.M * x.N);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& a : A) a = u(rng);
    for (float& b : B) b = u(rng);
    GemmParams p;
    p.trans_a = x.ta; p.trans_b = x.tb; p.M = x.M; p.N = x.N; p.K = x.K;
    p.A = A.data(); p.lda = x.ta ? x.M : x.K;
    p.B = B.data(); p.ldb = x.tb ? x.K : x.N;
    p.C = C.data(); p.ldc = x.N;
    p.accumulate = x.ta;
    p.bf16 = std::getenv("EMAE_BENCH_BF16") != nullptr;  // the opt-in bf16 path (AMX or AVX512-BF16)
    emae::cpu::gemm(p);  // warm-up
    double best = 1e30;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      emae::cpu::gemm(p);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const double flop = 2.0 * x.M * x.N * x.K;
    std::printf("%6d %5d %5d %d%d x%-2d %8.3f ms %6.1f GFLOP/s\n", x.M, x.N, x.K, x.ta, x.tb, x.count, best * 1e3,
                flop / best / 1e9);
    total_s += best * x.count;
    total_flop += flop * x.count;
  }
  std::printf("TOTAL %.1f ms %.1f GFLOP %.1f GFLOP/s kernel=%s threads=%d\n", total_s * 1e3, total_flop / 1e9,
              total_flop / total_s / 1e9, std::getenv("EMAE_BENCH_BF16") ? emae::cpu::gemm_bf16_kernel_name() : emae::cpu::gemm_kernel_name(),
              omp_get_max_threads());
}
