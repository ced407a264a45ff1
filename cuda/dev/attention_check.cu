// Standalone check and benchmark of cuda/attention.cuh (needs a GPU; not part of the addon build).
//   nvcc -std=c++17 -O3 -arch=sm_90 -I. -Inative cuda/dev/attention_check.cu -o /tmp/attention_check && /tmp/attention_check
// Every case fills qkv and dout with seeded random values (uniform in [-amp, amp) and [-1, 1)),
// poisons the outputs with NaN and follows each with a guard of sentinels that must stay untouched,
// runs emae::cuda::attention_forward / attention_backward and compares with a straightforward
// double-precision CPU reference (full T×T probabilities per (sequence, head)). The backward is
// fed the reference out and lse (rounded to fp32), so it is checked on its own.
// Tolerance: relative L2 ≤ 1e-5 for out, lse, dq, dk, dv. The kernels are fp32 throughout, so the
// only differences are fp32 rounding in sums of ≤ T·dh terms (expected ~1e-7 .. 1e-6).
// Also: bad arguments throw std::invalid_argument naming the argument; the backward is bitwise
// deterministic; then the vit-base decoder and encoder attention shapes are timed (cudaEvents,
// warm-up, median of 10). Exit status non-zero on any FAIL. Flag: --no-bench skips the timings.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/attention.cuh"
#include "cuda/common.cuh"

namespace {

constexpr double kTol = 1e-5;
constexpr size_t kGuard = 67;  // sentinel floats after every output
constexpr float kSentinel = 12345.5f;

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { EMAE_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// uniform in [-amp, amp), a function of (seed, index) only
std::vector<float> random_vector(size_t n, uint64_t seed, float amp) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = splitmix64(seed * 0x100000001B3ull ^ splitmix64(i));
    v[i] = amp * (float)((double)(h >> 40) * (1.0 / 8388608.0) - 1.0);
  }
  return v;
}

__device__ __forceinline__ uint64_t splitmix64_device(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// the same values as random_vector, generated on the device (for the large benchmark inputs)
__global__ void fill_random_kernel(float* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    const uint64_t h = splitmix64_device(seed * 0x100000001B3ull ^ splitmix64_device(i));
    p[i] = amp * (float)((double)(h >> 40) * (1.0 / 8388608.0) - 1.0);
  }
}

struct Shape {
  int S, T, H, dh;
};

// double-precision reference: out (S, T, D), lse (S, H, T), dqkv (S, T, 3D)
struct Reference {
  std::vector<double> out, lse, dqkv;
};

Reference reference(const std::vector<float>& qkv, const std::vector<float>& dout, const Shape& sh) {
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t row = 3 * (size_t)D;
  const double scale = 1.0 / std::sqrt((double)dh);
  Reference ref;
  ref.out.assign((size_t)S * T * D, 0.0);
  ref.lse.assign((size_t)S * H * T, 0.0);
  ref.dqkv.assign((size_t)S * T * row, 0.0);
  std::vector<double> p((size_t)T * T), ds((size_t)T * T);
  for (int s = 0; s < S; ++s)
    for (int h = 0; h < H; ++h) {
      const auto q = [&](int i, int d) { return (double)qkv[((size_t)s * T + i) * row + (size_t)h * dh + d]; };
      const auto k = [&](int j, int d) { return (double)qkv[((size_t)s * T + j) * row + D + (size_t)h * dh + d]; };
      const auto v = [&](int j, int d) { return (double)qkv[((size_t)s * T + j) * row + 2 * D + (size_t)h * dh + d]; };
      const auto go = [&](int i, int d) { return (double)dout[((size_t)s * T + i) * D + (size_t)h * dh + d]; };
      for (int i = 0; i < T; ++i) {
        double mx = -INFINITY;
        for (int j = 0; j < T; ++j) {
          double acc = 0.0;
          for (int d = 0; d < dh; ++d) acc += q(i, d) * k(j, d);
          p[(size_t)i * T + j] = acc * scale;
          mx = std::max(mx, acc * scale);
        }
        double sum = 0.0;
        for (int j = 0; j < T; ++j) sum += std::exp(p[(size_t)i * T + j] - mx);
        const double l = mx + std::log(sum);
        ref.lse[((size_t)s * H + h) * T + i] = l;
        for (int j = 0; j < T; ++j) p[(size_t)i * T + j] = std::exp(p[(size_t)i * T + j] - l);
        double* o = &ref.out[((size_t)s * T + i) * D + (size_t)h * dh];
        for (int j = 0; j < T; ++j)
          for (int d = 0; d < dh; ++d) o[d] += p[(size_t)i * T + j] * v(j, d);
      }
      for (int i = 0; i < T; ++i) {
        const double* o = &ref.out[((size_t)s * T + i) * D + (size_t)h * dh];
        double Di = 0.0;
        for (int d = 0; d < dh; ++d) Di += go(i, d) * o[d];
        for (int j = 0; j < T; ++j) {
          double dp = 0.0;
          for (int d = 0; d < dh; ++d) dp += go(i, d) * v(j, d);
          ds[(size_t)i * T + j] = p[(size_t)i * T + j] * (dp - Di);
        }
      }
      for (int i = 0; i < T; ++i) {
        double* dq = &ref.dqkv[((size_t)s * T + i) * row + (size_t)h * dh];
        for (int j = 0; j < T; ++j) {
          double* dk = &ref.dqkv[((size_t)s * T + j) * row + D + (size_t)h * dh];
          double* dv = &ref.dqkv[((size_t)s * T + j) * row + 2 * D + (size_t)h * dh];
          const double pij = p[(size_t)i * T + j], dsij = ds[(size_t)i * T + j];
          for (int d = 0; d < dh; ++d) {
            dq[d] += scale * dsij * k(j, d);
            dk[d] += scale * dsij * q(i, d);
            dv[d] += pij * go(i, d);
          }
        }
      }
    }
  return ref;
}

// relative L2 of got against ref over the elements selected by take(index)
template <typename Take>
double rel_l2(const std::vector<float>& got, const std::vector<double>& ref, Take take) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!take(i)) continue;
    const double d = (double)got[i] - ref[i];
    d2 += d * d;
    r2 += ref[i] * ref[i];
  }
  return std::sqrt(d2 / std::max(r2, 1e-300));
}

// device copy of n floats followed by kGuard sentinels, at `offset` floats past a 256-byte
// aligned allocation (offset 1 makes every float4 path fall back to scalar loads)
struct GuardedBuffer {
  DeviceBuffer<float> buf;
  size_t n, offset;
  GuardedBuffer(size_t n_, size_t offset_) : buf(n_ + kGuard + offset_), n(n_), offset(offset_) {}
  float* data() { return buf.ptr + offset; }
  void upload(const std::vector<float>& host) {
    std::vector<float> all(n + kGuard, kSentinel);
    std::copy(host.begin(), host.end(), all.begin());
    EMAE_CUDA_CHECK(cudaMemcpy(data(), all.data(), all.size() * sizeof(float), cudaMemcpyHostToDevice));
  }
  void poison() { upload(std::vector<float>(n, std::nanf(""))); }
  // the n values; false if a guard cell changed
  bool download(std::vector<float>& host) {
    std::vector<float> all(n + kGuard);
    EMAE_CUDA_CHECK(cudaMemcpy(all.data(), data(), all.size() * sizeof(float), cudaMemcpyDeviceToHost));
    host.assign(all.begin(), all.begin() + n);
    for (size_t i = n; i < all.size(); ++i)
      if (std::memcmp(&all[i], &kSentinel, sizeof(float)) != 0) return false;
    return true;
  }
};

struct Case {
  Shape shape;
  float amp;      // qkv uniform in [-amp, amp)
  size_t offset;  // floats past an aligned allocation, for every buffer
  const char* note;
};

bool pass(double e) { return e <= kTol; }  // NaN (an unwritten output) fails

int run_case(const Case& c, uint64_t seed) {
  const Shape& sh = c.shape;
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D, n_lse = (size_t)S * H * T;
  const std::vector<float> qkv = random_vector(n_qkv, seed, c.amp), dout = random_vector(n_out, seed + 1, 1.f);
  const Reference ref = reference(qkv, dout, sh);

  GuardedBuffer d_qkv(n_qkv, c.offset), d_dout(n_out, c.offset), d_out(n_out, c.offset), d_lse(n_lse, c.offset),
      d_dqkv(n_qkv, c.offset), d_scratch(emae::cuda::attention_backward_scratch_floats(S, T, H), c.offset);
  d_qkv.upload(qkv);
  d_dout.upload(dout);

  // forward
  d_out.poison();
  d_lse.poison();
  emae::cuda::attention_forward(d_out.data(), d_lse.data(), d_qkv.data(), S, T, H, dh, 0);
  EMAE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> out, lse;
  const bool guard_out = d_out.download(out), guard_lse = d_lse.download(lse);
  const bool guard_fwd = guard_out && guard_lse;
  const auto all = [](size_t) { return true; };
  const double e_out = rel_l2(out, ref.out, all), e_lse = rel_l2(lse, ref.lse, all);

  // backward, fed the reference out and lse
  std::vector<float> out_ref(ref.out.begin(), ref.out.end()), lse_ref(ref.lse.begin(), ref.lse.end());
  d_out.upload(out_ref);
  d_lse.upload(lse_ref);
  d_dqkv.poison();
  d_scratch.poison();
  emae::cuda::attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(), d_lse.data(), S, T, H, dh,
                                 d_scratch.data(), 0);
  EMAE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> dqkv, scratch_unused;
  const bool guard_dqkv = d_dqkv.download(dqkv), guard_scratch = d_scratch.download(scratch_unused);
  const bool guard_bwd = guard_dqkv && guard_scratch;
  const auto part = [D](int k) { return [D, k](size_t i) { return (int)(i % (3 * (size_t)D)) / D == k; }; };
  const double e_dq = rel_l2(dqkv, ref.dqkv, part(0)), e_dk = rel_l2(dqkv, ref.dqkv, part(1)),
               e_dv = rel_l2(dqkv, ref.dqkv, part(2));

  // determinism: a second backward on a fresh poison is bitwise identical
  d_dqkv.poison();
  emae::cuda::attention_backward(d_dqkv.data(), d_dout.data(), d_qkv.data(), d_out.data(), d_lse.data(), S, T, H, dh,
                                 d_scratch.data(), 0);
  EMAE_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> dqkv2;
  d_dqkv.download(dqkv2);
  const bool deterministic = std::memcmp(dqkv.data(), dqkv2.data(), n_qkv * sizeof(float)) == 0;

  const bool ok = pass(e_out) && pass(e_lse) && pass(e_dq) && pass(e_dk) && pass(e_dv) && guard_fwd && guard_bwd &&
                  deterministic;
  std::printf("%s S=%d T=%d H=%d dh=%d amp=%g offset=%zu%s%s  out %.2e  lse %.2e  dq %.2e  dk %.2e  dv %.2e%s%s\n",
              ok ? "PASS" : "FAIL", S, T, H, dh, c.amp, c.offset, c.note[0] ? "  " : "", c.note, e_out, e_lse, e_dq,
              e_dk, e_dv, guard_fwd && guard_bwd ? "" : "  GUARD OVERWRITTEN", deterministic ? "" : "  NONDETERMINISTIC");
  return ok ? 0 : 1;
}

// each call must throw std::invalid_argument whose message names `name`
int bad_arguments() {
  DeviceBuffer<float> buf(3 * 4 * 2 * 8 + 64);
  float* p = buf.ptr;
  struct Bad {
    const char* name;
    void (*call)(float*);
  };
  const Bad cases[] = {
      {"S", [](float* b) { emae::cuda::attention_forward(b, b, b, 0, 4, 2, 8, 0); }},
      {"T", [](float* b) { emae::cuda::attention_forward(b, b, b, 1, 0, 2, 8, 0); }},
      {"H", [](float* b) { emae::cuda::attention_forward(b, b, b, 1, 4, 0, 8, 0); }},
      {"dh", [](float* b) { emae::cuda::attention_forward(b, b, b, 1, 4, 2, 0, 0); }},
      {"dh", [](float* b) { emae::cuda::attention_forward(b, b, b, 1, 4, 2, 129, 0); }},
      {"out", [](float* b) { emae::cuda::attention_forward(nullptr, b, b, 1, 4, 2, 8, 0); }},
      {"qkv", [](float* b) { emae::cuda::attention_backward(b, b, nullptr, b, b, 1, 4, 2, 8, b, 0); }},
      {"scratch", [](float* b) { emae::cuda::attention_backward(b, b, b, b, b, 1, 4, 2, 8, nullptr, 0); }},
      {"dh", [](float* b) { emae::cuda::attention_backward(b, b, b, b, b, 1, 4, 2, 200, b, 0); }},
  };
  int failures = 0;
  for (const Bad& c : cases) {
    std::string msg = "(no exception)";
    bool ok = false;
    try {
      c.call(p);
    } catch (const std::invalid_argument& e) {
      msg = e.what();
      ok = msg.find(std::string(": ") + c.name + " ") != std::string::npos;
    } catch (const std::exception& e) {
      msg = std::string("wrong exception type: ") + e.what();
    }
    std::printf("%s bad argument %-8s -> \"%s\"\n", ok ? "PASS" : "FAIL", c.name, msg.c_str());
    failures += !ok;
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

void bench(const char* name, const Shape& sh) {
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D;
  DeviceBuffer<float> qkv(n_qkv), dout(n_out), out(n_out), lse((size_t)S * H * T), dqkv(n_qkv),
      scratch(emae::cuda::attention_backward_scratch_floats(S, T, H));
  fill_random_kernel<<<1024, 256>>>(qkv.ptr, n_qkv, 7, 1.f);
  EMAE_CHECK_LAUNCH("fill_random_kernel");
  fill_random_kernel<<<1024, 256>>>(dout.ptr, n_out, 8, 1.f);
  EMAE_CHECK_LAUNCH("fill_random_kernel");
  const float fwd = median_ms([&] { emae::cuda::attention_forward(out.ptr, lse.ptr, qkv.ptr, S, T, H, dh, 0); });
  const float bwd = median_ms([&] {
    emae::cuda::attention_backward(dqkv.ptr, dout.ptr, qkv.ptr, out.ptr, lse.ptr, S, T, H, dh, scratch.ptr, 0);
  });
  // conventional attention FLOP counts: forward 2 matmuls (4·T²·dh per head), backward 5 (10·T²·dh)
  const double per = (double)S * H * T * T * dh;
  std::printf("BENCH %-12s S=%d T=%d H=%d dh=%d  forward %.3f ms (%.1f TFLOP/s)  backward %.3f ms (%.1f TFLOP/s)\n",
              name, S, T, H, dh, fwd, 4 * per / (fwd * 1e9), bwd, 10 * per / (bwd * 1e9));
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

    const Case cases[] = {
        {{2, 17, 3, 4}, 1.f, 0, ""},
        {{3, 65, 4, 8}, 1.f, 0, ""},
        {{2, 197, 12, 64}, 1.f, 0, ""},
        {{1, 257, 16, 80}, 1.f, 0, ""},
        {{1, 50, 2, 128}, 1.f, 0, ""},
        // extra: scalar staging (odd dh, misaligned pointers), T = 2, dh = 1, exact chunk sizes,
        // peaky softmax (scores of std ≈ 4: the online rescaling matters)
        {{2, 2, 1, 1}, 1.f, 0, "(extra: T=2, dh=1)"},
        {{2, 33, 3, 5}, 1.f, 0, "(extra: odd dh)"},
        {{1, 100, 2, 37}, 1.f, 0, "(extra: odd dh, 2 dims per lane)"},
        {{3, 65, 4, 8}, 1.f, 1, "(extra: misaligned, scalar loads)"},
        {{2, 64, 2, 32}, 1.f, 0, "(extra: T a multiple of 32)"},
        {{2, 197, 4, 64}, 3.f, 0, "(extra: peaky softmax)"},
    };
    int failures = 0;
    uint64_t seed = 1234;
    for (const Case& c : cases) failures += run_case(c, seed += 10);
    failures += bad_arguments();
    if (do_bench) {
      bench("decoder", {256, 197, 16, 32});  // vit-base decoder: batch 64 × 4 parts, 1 + 196 tokens
      bench("encoder", {256, 50, 12, 64});   // vit-base encoder: 1 + 49 visible tokens
    }
    std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
}
