// Standalone check and benchmark of cuda/classifier.cuh (needs a GPU; not part of the addon build).
//   nvcc -std=c++17 -O3 -arch=sm_90 -I. -Inative cuda/dev/classifier_check.cu -o /tmp/classifier_check && /tmp/classifier_check
// Every case fills its inputs with seeded random values, poisons the outputs with NaN (the ops
// that assign) and follows each buffer with a guard of sentinels that must stay untouched.
// References, on the host:
//   - column sum, pool forward/backward, residual_scaled_forward, scale_rows: fp32 loops in the CPU
//     backend's order and roundings (native/cpu/ops.cc column_sum_accumulate with kRowChunk = 64,
//     native/cpu/classifier_ops.cc), compared bit for bit — the header promises that agreement.
//     (Host build without FMA contraction: x86-64 baseline has no FMA instruction.)
//   - cross-entropy: double precision (as the CPU backend); relative L2 of dlogits and relative
//     error of the loss ≤ 1e-5 (the kernel is fp32 per element: expected ~1e-7).
// Also: out aliasing an input (residual_scaled_forward, scale_rows, cross-entropy dlogits = logits),
// bitwise determinism of two runs, bad arguments throwing std::invalid_argument naming the
// argument, then vit-base fine-tuning shapes timed. Exit status non-zero on any FAIL.
// Flag: --no-bench skips the timings.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/classifier.cuh"
#include "cuda/common.cuh"
#include "cuda/dev/check_common.h"

namespace {

using namespace emae::dev;

namespace ec = emae::cuda;

constexpr double kTol = 1e-5;
constexpr size_t kGuard = 67;  // sentinel floats after every buffer
constexpr float kSentinel = 12345.5f;

// device copy of n floats followed by kGuard sentinels
struct GuardedBuffer {
  DeviceBuffer<float> buf;
  size_t n;
  explicit GuardedBuffer(size_t n_) : buf(n_ + kGuard), n(n_) {}
  float* data() { return buf.ptr; }
  void upload(const std::vector<float>& host) {
    std::vector<float> all(n + kGuard, kSentinel);
    std::copy(host.begin(), host.end(), all.begin());
    EMAE_CUDA_CHECK(cudaMemcpy(data(), all.data(), all.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  void poison() { upload(std::vector<float>(n, std::nanf(""))); }
  // the n values; false if a guard cell changed
  bool download(std::vector<float>& host) {
    EMAE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> all(n + kGuard);
    EMAE_CUDA_CHECK(cudaMemcpy(all.data(), data(), all.size() * sizeof(float), cudaMemcpyDeviceToHost));
    host.assign(all.begin(), all.begin() + n);
    for (size_t i = n; i < all.size(); ++i)
      if (std::memcmp(&all[i], &kSentinel, sizeof(float)) != 0) return false;
    return true;
  }
};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

int report(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  return ok ? 0 : 1;
}

// ---- CPU-order fp32 references (native/cpu) ---------------------------------------------------

void ref_column_sum(std::vector<float>& dst, const std::vector<float>& src, int R, int C) {
  constexpr int kRowChunk = 64;
  for (int r0 = 0; r0 < R; r0 += kRowChunk) {
    std::vector<float> part(C, 0.f);
    for (int r = r0; r < std::min(R, r0 + kRowChunk); ++r)
      for (int c = 0; c < C; ++c) part[c] += src[(size_t)r * C + c];
    for (int c = 0; c < C; ++c) dst[c] += part[c];
  }
}

std::vector<float> ref_pool_forward(const std::vector<float>& x, int S, int T, int D, bool mean) {
  std::vector<float> out((size_t)S * D, 0.f);
  for (int s = 0; s < S; ++s) {
    float* o = &out[(size_t)s * D];
    const float* xs = &x[(size_t)s * T * D];
    if (!mean) {
      std::copy(xs, xs + D, o);
      continue;
    }
    for (int t = 1; t < T; ++t)
      for (int d = 0; d < D; ++d) o[d] += xs[(size_t)t * D + d];
    const float inv = 1.f / (float)(T - 1);
    for (int d = 0; d < D; ++d) o[d] *= inv;
  }
  return out;
}

std::vector<float> ref_pool_backward(const std::vector<float>& g, int S, int T, int D, bool mean) {
  std::vector<float> dx((size_t)S * T * D, 0.f);
  const float inv = mean ? 1.f / (float)(T - 1) : 1.f;
  for (int s = 0; s < S; ++s)
    for (int t = mean ? 1 : 0; t < (mean ? T : 1); ++t)
      for (int d = 0; d < D; ++d)
        dx[((size_t)s * T + t) * D + d] = mean ? g[(size_t)s * D + d] * inv : g[(size_t)s * D + d];
  return dx;
}

// ---- cases -----------------------------------------------------------------------------------

int check_column_sum(int R, int C, uint64_t seed) {
  const std::vector<float> src = random_vector((size_t)R * C, seed, 1.f), dst0 = random_vector(C, seed + 1, 1.f);
  std::vector<float> ref = dst0;
  ref_column_sum(ref, src, R, C);
  GuardedBuffer d_src((size_t)R * C), d_dst(C), d_scratch(ec::column_sum_chunked_scratch_floats(R, C));
  d_src.upload(src);
  std::vector<float> got[2];
  bool guards = true;
  for (auto& g : got) {
    d_dst.upload(dst0);
    ec::column_sum_accumulate_chunked(d_dst.data(), d_src.data(), R, C, d_scratch.data(), 0);
    std::vector<float> unused;
    guards = d_dst.download(g) && d_scratch.download(unused) && guards;
  }
  return report(bitwise_equal(got[0], ref) && bitwise_equal(got[1], ref) && guards,
                "column_sum_accumulate R=" + std::to_string(R) + " C=" + std::to_string(C) +
                    " (bitwise = CPU order, twice)" + (guards ? "" : "  GUARD OVERWRITTEN"));
}

int check_pool(int S, int T, int D, bool mean, uint64_t seed) {
  const std::vector<float> x = random_vector((size_t)S * T * D, seed, 2.f), g = random_vector((size_t)S * D, seed + 1, 1.f);
  GuardedBuffer d_x((size_t)S * T * D), d_pooled((size_t)S * D), d_g((size_t)S * D), d_dx((size_t)S * T * D);
  d_x.upload(x);
  d_g.upload(g);
  d_pooled.poison();
  ec::pool_tokens_forward(d_pooled.data(), d_x.data(), S, T, D, mean, 0);
  std::vector<float> pooled, dx;
  bool guards = d_pooled.download(pooled);
  d_dx.poison();  // assigned everywhere, zeros included
  ec::pool_tokens_backward(d_dx.data(), d_g.data(), S, T, D, mean, 0);
  guards = d_dx.download(dx) && guards;
  const bool ok = bitwise_equal(pooled, ref_pool_forward(x, S, T, D, mean)) &&
                  bitwise_equal(dx, ref_pool_backward(g, S, T, D, mean)) && guards;
  return report(ok, "pool_tokens S=" + std::to_string(S) + " T=" + std::to_string(T) + " D=" + std::to_string(D) +
                        (mean ? " mean" : " cls") + " forward+backward (bitwise)" + (guards ? "" : "  GUARD OVERWRITTEN"));
}

// alias: 0 separate out, 1 out = res (or inp), 2 out = branch
int check_row_scales(int S, size_t n, int alias, uint64_t seed) {
  const std::vector<float> res = random_vector((size_t)S * n, seed, 1.f), branch = random_vector((size_t)S * n, seed + 1, 1.f);
  std::vector<float> keep(S);
  for (int s = 0; s < S; ++s) keep[s] = s % 3 == 1 ? 0.f : 1.f / (1.f - 0.1f);  // drop path p = 0.1
  std::vector<float> ref_res((size_t)S * n), ref_scale((size_t)S * n);
  for (int s = 0; s < S; ++s)
    for (size_t i = 0; i < n; ++i) {
      const size_t k = (size_t)s * n + i;
      const float scaled = keep[s] * branch[k];
      ref_res[k] = res[k] + scaled;
      ref_scale[k] = keep[s] * branch[k];
    }
  GuardedBuffer d_res((size_t)S * n), d_branch((size_t)S * n), d_out((size_t)S * n), d_keep(S);
  d_keep.upload(keep);
  d_res.upload(res);
  d_branch.upload(branch);
  d_out.poison();
  float* out = alias == 1 ? d_res.data() : alias == 2 ? d_branch.data() : d_out.data();
  GuardedBuffer& out_buf = alias == 1 ? d_res : alias == 2 ? d_branch : d_out;
  ec::residual_scaled_forward(out, d_res.data(), d_branch.data(), d_keep.data(), S, n, 0);
  std::vector<float> got_res, got_scale;
  bool guards = out_buf.download(got_res);
  // scale_rows: out = keep · branch, out aliasing the input when alias != 0
  d_branch.upload(branch);
  d_out.poison();
  float* out2 = alias ? d_branch.data() : d_out.data();
  ec::scale_rows(out2, d_branch.data(), d_keep.data(), S, n, 0);
  guards = (alias ? d_branch : d_out).download(got_scale) && guards;
  const char* names[] = {"", " out=res/inp", " out=branch/inp"};
  return report(bitwise_equal(got_res, ref_res) && bitwise_equal(got_scale, ref_scale) && guards,
                "residual_scaled_forward+scale_rows S=" + std::to_string(S) + " n=" + std::to_string(n) + names[alias] +
                    " (bitwise)" + (guards ? "" : "  GUARD OVERWRITTEN"));
}

int check_cross_entropy(int B, int C, float amp, bool alias, uint64_t seed) {
  const std::vector<float> logits = random_vector((size_t)B * C, seed, amp);
  // soft targets: label smoothing 0.1 around a pseudo-random class per row
  std::vector<float> targets((size_t)B * C, 0.1f / C);
  for (int b = 0; b < B; ++b) targets[(size_t)b * C + splitmix64(seed + b) % C] += 0.9f;
  std::vector<double> ref_d((size_t)B * C);
  double ref_loss = 0.0;
  for (int b = 0; b < B; ++b) {
    const float* z = &logits[(size_t)b * C];
    const float* t = &targets[(size_t)b * C];
    const double m = *std::max_element(z, z + C);
    double sum = 0.0;
    for (int c = 0; c < C; ++c) sum += std::exp((double)z[c] - m);
    const double lse = m + std::log(sum);
    for (int c = 0; c < C; ++c) {
      ref_loss -= (double)t[c] * ((double)z[c] - lse);
      ref_d[(size_t)b * C + c] = (std::exp((double)z[c] - lse) - (double)t[c]) / B;
    }
  }
  ref_loss /= B;
  GuardedBuffer d_logits((size_t)B * C), d_targets((size_t)B * C), d_dlogits((size_t)B * C);
  DeviceBuffer<double> scratch(ec::cross_entropy_scratch_doubles(B));
  d_targets.upload(targets);
  std::vector<float> got[2];
  double loss[2];
  bool guards = true;
  for (int run = 0; run < 2; ++run) {
    d_logits.upload(logits);
    d_dlogits.poison();
    float* dl = alias ? d_logits.data() : d_dlogits.data();
    loss[run] = ec::cross_entropy_forward_backward(dl, d_logits.data(), d_targets.data(), B, C, scratch.ptr, 0);
    guards = (alias ? d_logits : d_dlogits).download(got[run]) && guards;
  }
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < ref_d.size(); ++i) {
    const double d = (double)got[0][i] - ref_d[i];
    d2 += d * d;
    r2 += ref_d[i] * ref_d[i];
  }
  const double e_d = std::sqrt(d2 / std::max(r2, 1e-300));
  const double e_loss = std::fabs(loss[0] - ref_loss) / std::max(std::fabs(ref_loss), 1e-300);
  const bool deterministic = bitwise_equal(got[0], got[1]) && std::memcmp(&loss[0], &loss[1], sizeof(double)) == 0;
  char line[256];
  std::snprintf(line, sizeof(line), "cross_entropy B=%d C=%d amp=%g%s  loss %.6f (rel %.2e)  dlogits %.2e%s%s", B, C,
                amp, alias ? " dlogits=logits" : "", loss[0], e_loss, e_d, deterministic ? "" : "  NONDETERMINISTIC",
                guards ? "" : "  GUARD OVERWRITTEN");
  return report(e_d <= kTol && e_loss <= kTol && deterministic && guards, line);
}

// each call must throw std::invalid_argument whose message names `name`
int bad_arguments() {
  DeviceBuffer<float> buf(4096);
  DeviceBuffer<double> dbuf(64);
  float* p = buf.ptr;
  double* q = dbuf.ptr;
  struct Bad {
    const char* name;
    void (*call)(float*, double*);
  };
  const Bad cases[] = {
      {"R", [](float* b, double*) { ec::column_sum_accumulate_chunked(b, b, -1, 4, b, 0); }},
      {"C", [](float* b, double*) { ec::column_sum_accumulate_chunked(b, b, 4, -1, b, 0); }},
      {"T", [](float* b, double*) { ec::pool_tokens_forward(b, b, 2, 1, 8, true, 0); }},
      {"T", [](float* b, double*) { ec::pool_tokens_backward(b, b, 2, 0, 8, false, 0); }},
      {"S", [](float* b, double*) { ec::pool_tokens_forward(b, b, -2, 3, 8, true, 0); }},
      {"S", [](float* b, double*) { ec::residual_scaled_forward(b, b, b, b, -1, 8, 0); }},
      {"S", [](float* b, double*) { ec::scale_rows(b, b, b, -1, 8, 0); }},
      {"B", [](float* b, double* d) { ec::cross_entropy_forward_backward(b, b, b, 0, 8, d, 0); }},
      {"C", [](float* b, double* d) { ec::cross_entropy_forward_backward(b, b, b, 2, 0, d, 0); }},
  };
  int failures = 0;
  for (const Bad& c : cases) {
    std::string msg = "(no exception)";
    bool ok = false;
    try {
      c.call(p, q);
    } catch (const std::invalid_argument& e) {
      msg = e.what();
      ok = msg.find(std::string(": ") + c.name + " ") != std::string::npos;
    } catch (const std::exception& e) {
      msg = std::string("wrong exception type: ") + e.what();
    }
    failures += report(ok, std::string("bad argument ") + c.name + " -> \"" + msg + "\"");
  }
  return failures;
}

template <typename F>
float median_ms(F&& f) {
  cudaEvent_t start, stop;
  EMAE_CUDA_CHECK(cudaEventCreate(&start));
  EMAE_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < 3; ++i) f();  // warm-up
  EMAE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms(10);
  for (float& t : ms) {
    EMAE_CUDA_CHECK(cudaEventRecord(start, 0));
    f();
    EMAE_CUDA_CHECK(cudaEventRecord(stop, 0));
    EMAE_CUDA_CHECK(cudaEventSynchronize(stop));
    EMAE_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
  }
  EMAE_CUDA_CHECK(cudaEventDestroy(start));
  EMAE_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return 0.5f * (ms[4] + ms[5]);
}

void bench_line(const char* name, float ms, double bytes) {
  std::printf("BENCH %-40s %.4f ms  (%.0f GB/s)\n", name, ms, bytes / (ms * 1e6));
}

// vit-base fine-tuning at batch 256: S = 256, T = 197, D = 768, 1000 classes
void bench() {
  const int S = 256, T = 197, D = 768, B = 256, C = 1000;
  const size_t n = (size_t)T * D, all = (size_t)S * n;
  DeviceBuffer<float> x(all), y(all), keep(S), pooled((size_t)S * D), dst(n),
      scratch(ec::column_sum_chunked_scratch_floats(S, (int)n)), logits((size_t)B * C), targets((size_t)B * C),
      dlogits((size_t)B * C);
  DeviceBuffer<double> ce_scratch(ec::cross_entropy_scratch_doubles(B));
  EMAE_CUDA_CHECK(cudaMemset(x.ptr, 0, all * sizeof(float)));
  EMAE_CUDA_CHECK(cudaMemset(y.ptr, 0, all * sizeof(float)));
  EMAE_CUDA_CHECK(cudaMemset(keep.ptr, 0, S * sizeof(float)));
  EMAE_CUDA_CHECK(cudaMemset(logits.ptr, 0, (size_t)B * C * sizeof(float)));
  EMAE_CUDA_CHECK(cudaMemset(targets.ptr, 0, (size_t)B * C * sizeof(float)));
  const double f = sizeof(float);
  bench_line("residual_scaled_forward (256, 197·768)",
             median_ms([&] { ec::residual_scaled_forward(y.ptr, x.ptr, y.ptr, keep.ptr, S, n, 0); }), 3 * all * f);
  bench_line("scale_rows (256, 197·768)", median_ms([&] { ec::scale_rows(y.ptr, y.ptr, keep.ptr, S, n, 0); }),
             2 * all * f);
  bench_line("column_sum_accumulate R=256 C=197·768",
             median_ms([&] { ec::column_sum_accumulate_chunked(dst.ptr, x.ptr, S, (int)n, scratch.ptr, 0); }),
             all * f);
  bench_line("pool_tokens_forward mean (256, 197, 768)",
             median_ms([&] { ec::pool_tokens_forward(pooled.ptr, x.ptr, S, T, D, true, 0); }), all * f);
  bench_line("pool_tokens_backward mean (256, 197, 768)",
             median_ms([&] { ec::pool_tokens_backward(x.ptr, pooled.ptr, S, T, D, true, 0); }), all * f);
  bench_line("cross_entropy B=256 C=1000 (with host sync)", median_ms([&] {
               ec::cross_entropy_forward_backward(dlogits.ptr, logits.ptr, targets.ptr, B, C, ce_scratch.ptr, 0);
             }),
             3.0 * B * C * f);
}

}  // namespace

int main(int argc, char** argv) {
  bool do_bench = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-bench") == 0) {
      do_bench = false;
    } else {
      std::fprintf(stderr, "usage: %s [--no-bench]\n", argv[0]);
      return 2;
    }
  }
  try {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      std::printf("FAIL no CUDA device\n");
      return 1;
    }
    cudaDeviceProp prop;
    EMAE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    int failures = 0;
    uint64_t seed = 4321;
    // column sums: one chunk, exact chunks, a ragged last chunk, a C not a multiple of the block
    const std::pair<int, int> column_sums[] = {{1, 5}, {64, 128}, {65, 1000}, {256, 197 * 64}, {300, 17 * 48}};
    for (const auto& rc : column_sums)
      failures += check_column_sum(rc.first, rc.second, seed += 10);
    const std::array<int, 3> pools[] = {{1, 2, 1}, {3, 17, 48}, {5, 50, 130}, {4, 197, 768}};  // S, T, D
    for (bool mean : {true, false})
      for (const auto& s : pools)
        failures += check_pool(s[0], s[1], s[2], mean, seed += 10);
    const std::pair<int, size_t> rows[] = {{1, 1}, {3, 1000}, {7, 17 * 48}, {9, 197 * 768}};  // S, n
    for (int alias : {0, 1, 2})
      for (const auto& sn : rows)
        failures += check_row_scales(sn.first, sn.second, alias, seed += 10);
    // cross-entropy: C below, at and above the block; peaky logits (amp 30: the max subtraction matters)
    const std::pair<int, int> logits[] = {{1, 1}, {3, 7}, {5, 128}, {64, 1000}, {300, 1000}, {2, 21843}};  // B, C
    for (const auto& bc : logits)
      failures += check_cross_entropy(bc.first, bc.second, 4.f, false, seed += 10);
    failures += check_cross_entropy(16, 1000, 30.f, false, seed += 10);
    failures += check_cross_entropy(16, 1000, 4.f, true, seed += 10);
    failures += bad_arguments();
    if (do_bench) bench();
    std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
}
