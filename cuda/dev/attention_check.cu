// Standalone check and benchmark of the attention paths (needs a GPU; not part of the addon build):
//   simt  cuda/attention.cuh, fp32 on CUDA cores (the default path, verified on an H100)
//   tc    cuda/attention_tc.cuh, bf16 mma.sync with fp32 accumulation (EMAE_CUDA_ATTENTION=tc);
//         head dims other than 32, 64, 128 run the simt kernels
//   nvcc -std=c++17 -O3 --expt-relaxed-constexpr -arch=sm_90 -I. -Inative cuda/dev/attention_check.cu \
//     -o /tmp/attention_check && /tmp/attention_check [--path simt,tc] [--no-bench]
// Every case fills qkv and dout with fresh seeded random values (uniform in [-amp, amp) and
// [-1, 1)), poisons the outputs with NaN and follows each with a guard of sentinels that must stay
// untouched, runs each path's attention_forward / attention_backward and compares with a
// straightforward double-precision CPU reference (full T×T probabilities per (sequence, head)).
// The backward is fed the reference out and lse (rounded to fp32), so it is checked on its own.
// Tolerances, relative L2 of out, lse, dq, dk, dv (σ: the RMS of the case's scores q·k·scale, its
// logit scale; σ ≈ 0.33 for amp = 1, 3 for amp = 3, 12 for amp = 6):
//   simt  1e-5·max(1, σ/3). fp32 throughout: only fp32 rounding in sums of ≤ T·dh terms (seen
//         ~1e-7 .. 1.2e-6 on an H100), growing with the logit scale through exp.
//   tc    out, lse u·(1 + σ); dq, dk, dv 2u·(1 + σ), u = 2^-8 (bf16's unit roundoff). q, k, v and
//         dout are rounded to bf16 once (relative 2^-9 each), so a score is off by ~u·|s| and the
//         probabilities by that relative amount: the error grows with σ. The gradients also round
//         P and dS to bf16 for their second products, hence 2u. At σ ≈ 0.33: 5e-3 and 1e-2 (the
//         brief's ~1e-2); the CPU emulation (attention_tc_emulate.cu) of the same bodies gives
//         ~2.2e-3 (out) and ~3.2e-3 (gradients) there, 8e-3 and 3.3e-2 at σ = 12: margins ≈ 3×.
//   T = 1: dq = dk = 0 exactly (one key, no softmax gradient); their error is taken relative to
//   |dv| instead (both paths leave rounding noise: dout·v and D are summed differently).
// bf16 storage (issue 11: qkv, dout, out, dqkv bf16; lse and D fp32) runs a second list of cases on
// both paths. The inputs are rounded to bf16 first and the reference is computed on the rounded
// values (what the kernels read); the backward is fed the reference out rounded to bf16. The
// inputs are then exact, so what remains is the rounding of each output on store (≤ u/2 relative
// per element) and, on tc, of P and dS:
//   simt  out u/2 + t, lse t, dq, dk, dv u·(1 + σ/8) + t (t: the fp32 tolerance above). D from
//         the rounded out: ds = p (dp − D) cancels where the softmax is peaky, so out's rounding
//         reaches dq and dk amplified (CPU emulation, attention_simt_emulate.cu: 4.1e-3 at σ 5.3,
//         5.0e-3 at σ 21, above u + t)
//   tc    lse t (exact bf16 products summed in fp32); out, dq, dk, dv as tc above.
// Also: bad arguments (a mix of fp32 and bf16 views among them) throw std::invalid_argument naming
// the argument; forward and backward are bitwise deterministic (each run twice on fresh poison);
// then the MAE shapes (vit-base, batch 64 × 4 parts: encoder S=256, T=50, H=12, dh=64; decoder
// S=256, T=197, H=16, dh=32) are timed on each path with fp32 and with bf16 storage (cudaEvents,
// warm-up, median of 10) and printed as a table. Exit status non-zero on
// any FAIL. Flags: --path simt,tc (default both), --no-bench skips the timings.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/act.h"
#include "cuda/attention.cuh"
#include "cuda/attention_tc.cuh"
#include "cuda/common.cuh"
#include "cuda/dev/attention_reference.h"
#include "cuda/dev/check_common.h"

namespace {

using namespace emae::dev;
using emae::Act;
using emae::ActIn;
using emae::DType;
using emae::cuda::AttentionPath;
using bf16 = __nv_bfloat16;

constexpr size_t kGuard = 67;  // sentinel floats after every output
constexpr float kSentinel = 12345.5f;

// the same values as random_vector, generated on the device (for the large benchmark inputs)
__global__ void fill_random_kernel(float* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    p[i] = emae::dev::seeded_uniform(seed, i, amp);
  }
}
__global__ void fill_random_bf16_kernel(bf16* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    p[i] = __float2bfloat16_rn(emae::dev::seeded_uniform(seed, i, amp));
  }
}
// n elements of `storage` at p ← the seeded values
void fill_random(void* p, DType storage, size_t n, uint64_t seed, float amp) {
  if (storage == DType::kBF16) fill_random_bf16_kernel<<<1024, 256>>>(static_cast<bf16*>(p), n, seed, amp);
  else fill_random_kernel<<<1024, 256>>>(static_cast<float*>(p), n, seed, amp);
  EMAE_CHECK_LAUNCH("fill_random_kernel");
}

// see the header comment (attention_reference.h holds the table)
AttentionTolerance tolerance(AttentionPath path, int dh, double sigma, DType storage) {
  const bool tc = path == AttentionPath::kTc && emae::cuda::attention_tc_supports(dh);
  return attention_tolerance(tc, storage == DType::kBF16, sigma);
}

// values as stored in `storage`, widened back to float
std::vector<float> rounded(std::vector<float> v, DType storage) {
  if (storage == DType::kBF16)
    for (float& x : v) x = emae::float_from_bf16(emae::bf16_from_float(x));
  return v;
}

// device copy of n elements (fp32, or bf16 bits) followed by kGuard sentinels, at `offset`
// elements past a 256-byte aligned allocation (offset 1 makes every vector path fall back to
// scalar loads)
struct GuardedBuffer {
  DeviceBuffer<float> buf;
  size_t n, offset;
  DType type;
  GuardedBuffer(size_t n_, size_t offset_, DType type_ = DType::kF32)
      : buf(n_ + kGuard + offset_), n(n_), offset(offset_), type(type_) {}
  void* data() { return static_cast<char*>(static_cast<void*>(buf.ptr)) + offset * emae::dtype_bytes(type); }
  float* f32() { return static_cast<float*>(data()); }
  Act view() { return {data(), type}; }
  // host values rounded to the storage type
  void upload(const std::vector<float>& host) {
    std::vector<float> all(n + kGuard, kSentinel);
    std::copy(host.begin(), host.end(), all.begin());
    if (type == DType::kF32) {
      EMAE_CUDA_CHECK(cudaMemcpy(data(), all.data(), all.size() * sizeof(float), cudaMemcpyHostToDevice));
    } else {
      std::vector<uint16_t> bits(all.size());
      for (size_t i = 0; i < all.size(); ++i) bits[i] = emae::bf16_from_float(all[i]);
      EMAE_CUDA_CHECK(cudaMemcpy(data(), bits.data(), bits.size() * sizeof(uint16_t), cudaMemcpyHostToDevice));
    }
  }
  void poison() { upload(std::vector<float>(n, std::nanf(""))); }
  // the n values, widened; false if a guard cell changed (kSentinel is exact in bf16)
  bool download(std::vector<float>& host) {
    std::vector<float> all(n + kGuard);
    if (type == DType::kF32) {
      EMAE_CUDA_CHECK(cudaMemcpy(all.data(), data(), all.size() * sizeof(float), cudaMemcpyDeviceToHost));
    } else {
      std::vector<uint16_t> bits(all.size());
      EMAE_CUDA_CHECK(cudaMemcpy(bits.data(), data(), bits.size() * sizeof(uint16_t), cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < all.size(); ++i) all[i] = emae::float_from_bf16(bits[i]);
    }
    host.assign(all.begin(), all.begin() + n);
    for (size_t i = n; i < all.size(); ++i)
      if (std::memcmp(&all[i], &kSentinel, sizeof(float)) != 0) return false;
    return true;
  }
};

struct Case {
  Shape shape;
  float amp;      // qkv uniform in [-amp, amp)
  size_t offset;  // elements past an aligned allocation, for every buffer
  const char* note;
  DType storage = DType::kF32;  // of qkv, dout, out, dqkv
};

void forward(AttentionPath path, Act out, float* lse, ActIn qkv, const Shape& sh) {
  emae::cuda::attention_forward_on(path, out, lse, qkv, sh.S, sh.T, sh.H, sh.dh, 0);
}
void backward(AttentionPath path, Act dqkv, ActIn dout, ActIn qkv, ActIn out, const float* lse, const Shape& sh,
              float* scratch) {
  emae::cuda::attention_backward_on(path, dqkv, dout, qkv, out, lse, sh.S, sh.T, sh.H, sh.dh, scratch, 0);
}

// one case on every path, against one reference
int run_case(const Case& c, uint64_t seed, const std::vector<AttentionPath>& paths) {
  const Shape& sh = c.shape;
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D, n_lse = (size_t)S * H * T;
  const DType st = c.storage;
  // the inputs as stored: the reference sees what the kernels read
  const std::vector<float> qkv = rounded(random_vector(n_qkv, seed, c.amp), st),
                           dout = rounded(random_vector(n_out, seed + 1, 1.f), st);
  const Reference ref = reference(qkv, dout, sh);
  const std::vector<float> out_ref(ref.out.begin(), ref.out.end()), lse_ref(ref.lse.begin(), ref.lse.end());
  const auto all = [](size_t) { return true; };
  const auto part = [D](int k) { return [D, k](size_t i) { return (int)(i % (3 * (size_t)D)) / D == k; }; };
  int failures = 0;
  for (AttentionPath path : paths) {
    GuardedBuffer d_qkv(n_qkv, c.offset, st), d_dout(n_out, c.offset, st), d_out(n_out, c.offset, st),
        d_lse(n_lse, c.offset), d_dqkv(n_qkv, c.offset, st),
        d_scratch(emae::cuda::attention_backward_scratch_floats(S, T, H), c.offset);
    d_qkv.upload(qkv);
    d_dout.upload(dout);

    // forward, twice on fresh poison: bitwise identical
    std::vector<float> out, lse, out2, lse2;
    bool guard_fwd = true;
    for (int rep = 0; rep < 2; ++rep) {
      d_out.poison();
      d_lse.poison();
      forward(path, d_out.view(), d_lse.f32(), d_qkv.view(), sh);
      EMAE_CUDA_CHECK(cudaDeviceSynchronize());
      guard_fwd = d_out.download(rep ? out2 : out) && guard_fwd;
      guard_fwd = d_lse.download(rep ? lse2 : lse) && guard_fwd;
    }
    const bool det_fwd = std::memcmp(out.data(), out2.data(), n_out * sizeof(float)) == 0 &&
                         std::memcmp(lse.data(), lse2.data(), n_lse * sizeof(float)) == 0;
    const double e_out = rel_l2(out, ref.out, all), e_lse = rel_l2(lse, ref.lse, all);

    // backward on the reference out and lse, twice on fresh poison: bitwise identical
    d_out.upload(out_ref);
    d_lse.upload(lse_ref);
    std::vector<float> dqkv, dqkv2, scratch_unused;
    bool guard_bwd = true;
    for (int rep = 0; rep < 2; ++rep) {
      d_dqkv.poison();
      d_scratch.poison();
      backward(path, d_dqkv.view(), d_dout.view(), d_qkv.view(), d_out.view(), d_lse.f32(), sh, d_scratch.f32());
      EMAE_CUDA_CHECK(cudaDeviceSynchronize());
      guard_bwd = d_dqkv.download(rep ? dqkv2 : dqkv) && guard_bwd;
      guard_bwd = d_scratch.download(scratch_unused) && guard_bwd;
    }
    const bool det_bwd = std::memcmp(dqkv.data(), dqkv2.data(), n_qkv * sizeof(float)) == 0;
    double e_dq = rel_l2(dqkv, ref.dqkv, part(0)), e_dk = rel_l2(dqkv, ref.dqkv, part(1)),
           e_dv = rel_l2(dqkv, ref.dqkv, part(2));
    if (T == 1) {  // dq = dk = 0 exactly: their error relative to |dv|
      e_dq *= norm(ref.dqkv, part(0)) / norm(ref.dqkv, part(2));
      e_dk *= norm(ref.dqkv, part(1)) / norm(ref.dqkv, part(2));
    }

    const AttentionTolerance tol = tolerance(path, dh, ref.score_rms, st);
    const auto pb = [&](double e) { return e <= tol.grads; };  // NaN (an unwritten output) fails
    const bool ok = e_out <= tol.out && e_lse <= tol.lse && pb(e_dq) && pb(e_dk) && pb(e_dv) && guard_fwd && guard_bwd &&
                    det_fwd && det_bwd;
    std::printf("%s [%-4s %s] S=%d T=%d H=%d dh=%d amp=%g offset=%zu%s%s  sigma %.2f  out %.2e (tol %.1e)  lse %.2e "
                "(tol %.1e)  dq %.2e  dk %.2e  dv %.2e (tol %.1e)%s%s%s\n",
                ok ? "PASS" : "FAIL", emae::cuda::attention_path_name(path), emae::dtype_name(st), S, T, H, dh, c.amp,
                c.offset, c.note[0] ? "  " : "", c.note, ref.score_rms, e_out, tol.out, e_lse, tol.lse, e_dq, e_dk, e_dv,
                tol.grads,
                guard_fwd && guard_bwd ? "" : "  GUARD OVERWRITTEN", det_fwd ? "" : "  FORWARD NONDETERMINISTIC",
                det_bwd ? "" : "  BACKWARD NONDETERMINISTIC");
    failures += !ok;
  }
  return failures;
}

// each call must throw std::invalid_argument whose message names `name`
int bad_arguments(AttentionPath path) {
  DeviceBuffer<float> buf(3 * 4 * 2 * 32 + 64);
  float* p = buf.ptr;
  struct Bad {
    const char* name;
    void (*call)(AttentionPath, float*);
  };
  using emae::cuda::attention_backward_on;
  using emae::cuda::attention_forward_on;
  const Bad cases[] = {
      {"S", [](AttentionPath a, float* b) { attention_forward_on(a, b, b, b, 0, 4, 2, 32, 0); }},
      {"T", [](AttentionPath a, float* b) { attention_forward_on(a, b, b, b, 1, 0, 2, 32, 0); }},
      {"H", [](AttentionPath a, float* b) { attention_forward_on(a, b, b, b, 1, 4, 0, 32, 0); }},
      {"dh", [](AttentionPath a, float* b) { attention_forward_on(a, b, b, b, 1, 4, 2, 0, 0); }},
      {"dh", [](AttentionPath a, float* b) { attention_forward_on(a, b, b, b, 1, 4, 2, 129, 0); }},
      {"out", [](AttentionPath a, float* b) { attention_forward_on(a, nullptr, b, b, 1, 4, 2, 32, 0); }},
      {"lse", [](AttentionPath a, float* b) { attention_forward_on(a, b, nullptr, b, 1, 4, 2, 32, 0); }},
      {"qkv", [](AttentionPath a, float* b) { attention_backward_on(a, b, b, nullptr, b, b, 1, 4, 2, 32, b, 0); }},
      {"dout", [](AttentionPath a, float* b) { attention_backward_on(a, b, nullptr, b, b, b, 1, 4, 2, 32, b, 0); }},
      {"scratch", [](AttentionPath a, float* b) { attention_backward_on(a, b, b, b, b, b, 1, 4, 2, 32, nullptr, 0); }},
      {"dh", [](AttentionPath a, float* b) { attention_backward_on(a, b, b, b, b, b, 1, 4, 2, 200, b, 0); }},
      // a mix of fp32 and bf16 views, named by the view that differs from qkv's storage
      {"out", [](AttentionPath a, float* b) { attention_forward_on(a, Act(b, DType::kBF16), b, b, 1, 4, 2, 32, 0); }},
      {"dout",
       [](AttentionPath a, float* b) {
         const Act h(b, DType::kBF16);
         attention_backward_on(a, h, b, h, h, b, 1, 4, 2, 32, b, 0);
       }},
  };
  int failures = 0;
  for (const Bad& c : cases) {
    std::string msg = "(no exception)";
    bool ok = false;
    try {
      c.call(path, p);
    } catch (const std::invalid_argument& e) {
      msg = e.what();
      ok = msg.find(std::string(": ") + c.name + " ") != std::string::npos;
    } catch (const std::exception& e) {
      msg = std::string("wrong exception type: ") + e.what();
    }
    std::printf("%s [%-4s] bad argument %-8s -> \"%s\"\n", ok ? "PASS" : "FAIL", emae::cuda::attention_path_name(path),
                c.name, msg.c_str());
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

struct Timing {
  float forward, backward;  // ms
};

Timing bench(AttentionPath path, const Shape& sh, DType st) {
  const int S = sh.S, T = sh.T, H = sh.H, dh = sh.dh, D = H * dh;
  const size_t n_qkv = (size_t)S * T * 3 * D, n_out = (size_t)S * T * D;
  // activations sized in floats either way (bf16 uses the first half)
  DeviceBuffer<float> qkv(n_qkv), dout(n_out), out(n_out), lse((size_t)S * H * T), dqkv(n_qkv),
      scratch(emae::cuda::attention_backward_scratch_floats(S, T, H));
  fill_random(qkv.ptr, st, n_qkv, 7, 1.f);
  fill_random(dout.ptr, st, n_out, 8, 1.f);
  const Act q(qkv.ptr, st), g(dout.ptr, st), o(out.ptr, st), dq(dqkv.ptr, st);
  Timing t;
  t.forward = median_ms([&] { forward(path, o, lse.ptr, q, sh); });
  t.backward = median_ms([&] { backward(path, dq, g, q, o, lse.ptr, sh, scratch.ptr); });
  return t;
}

// the MAE shapes on every path, one markdown table; speed-ups against simt when it ran
void bench_table(const std::vector<AttentionPath>& paths) {
  struct Named {
    const char* name;
    Shape shape;
  };
  const Named shapes[] = {
      {"encoder", {256, 50, 12, 64}},   // vit-base encoder: batch 64 × 4 parts, 1 + 49 visible tokens
      {"decoder", {256, 197, 16, 32}},  // vit-base decoder: 1 + 196 tokens
  };
  std::printf("\n| shape | S×H | T | dh | path | storage | forward ms | backward ms | forward TFLOP/s | "
              "backward TFLOP/s | forward vs simt fp32 | backward vs simt fp32 |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Named& n : shapes) {
    const Shape& sh = n.shape;
    // conventional attention FLOP counts: forward 2 matmuls (4·T²·dh per head), backward 5 (10·T²·dh)
    const double per = (double)sh.S * sh.H * sh.T * sh.T * sh.dh;
    Timing simt{0.f, 0.f};  // simt fp32, the verified default
    for (DType st : {DType::kF32, DType::kBF16})
      for (AttentionPath path : paths) {
        const Timing t = bench(path, sh, st);
        const bool baseline = path == AttentionPath::kSimt && st == DType::kF32;
        if (baseline) simt = t;
        char vs_f[32] = "-", vs_b[32] = "-";
        if (simt.forward > 0 && !baseline) {
          std::snprintf(vs_f, sizeof vs_f, "%.2f×", simt.forward / t.forward);
          std::snprintf(vs_b, sizeof vs_b, "%.2f×", simt.backward / t.backward);
        }
        std::printf("| %s | %d×%d | %d | %d | %s | %s | %.3f | %.3f | %.1f | %.1f | %s | %s |\n", n.name, sh.S, sh.H,
                    sh.T, sh.dh, emae::cuda::attention_path_name(path), emae::dtype_name(st), t.forward, t.backward,
                    4 * per / (t.forward * 1e9), 10 * per / (t.backward * 1e9), vs_f, vs_b);
      }
  }
}

std::vector<AttentionPath> parse_paths(const std::string& list) {
  std::vector<AttentionPath> paths;
  size_t at = 0;
  while (at <= list.size()) {
    const size_t comma = std::min(list.find(',', at), list.size());
    const std::string name = list.substr(at, comma - at);
    if (name == "simt") paths.push_back(AttentionPath::kSimt);
    else if (name == "tc") paths.push_back(AttentionPath::kTc);
    else throw std::invalid_argument("--path: unknown path '" + name + "' (simt, tc)");
    at = comma + 1;
  }
  return paths;
}

}  // namespace

int main(int argc, char** argv) {
  bool do_bench = true;
  std::string path_list = "simt,tc";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-bench") == 0) {
      do_bench = false;
    } else if (std::strcmp(argv[i], "--path") == 0 && i + 1 < argc) {
      path_list = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--path simt,tc] [--no-bench]\n", argv[0]);
      return 2;
    }
  }
  try {
    const std::vector<AttentionPath> paths = parse_paths(path_list);
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      std::printf("FAIL no CUDA device\n");
      return 1;
    }
    cudaDeviceProp prop;
    EMAE_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s (sm_%d%d), paths: %s\n", prop.name, prop.major, prop.minor, path_list.c_str());

    const Case cases[] = {
        {{2, 17, 3, 4}, 1.f, 0, "(tc: simt fallback)"},
        {{3, 65, 4, 8}, 1.f, 0, "(tc: simt fallback)"},
        {{2, 197, 12, 64}, 1.f, 0, ""},
        {{1, 257, 16, 80}, 1.f, 0, "(tc: simt fallback)"},
        {{1, 50, 2, 128}, 1.f, 0, ""},
        // extra: scalar staging (odd dh, misaligned pointers), T = 2, dh = 1, exact chunk sizes,
        // peaky softmax (scores of std ≈ 3: the online rescaling matters)
        {{2, 2, 1, 1}, 1.f, 0, "(extra: T=2, dh=1)"},
        {{2, 33, 3, 5}, 1.f, 0, "(extra: odd dh)"},
        {{1, 100, 2, 37}, 1.f, 0, "(extra: odd dh, 2 dims per lane)"},
        {{3, 65, 4, 8}, 1.f, 1, "(extra: misaligned, scalar loads)"},
        {{2, 64, 2, 32}, 1.f, 0, "(extra: T a multiple of 32)"},
        {{2, 197, 4, 64}, 3.f, 0, "(extra: peaky softmax)"},
        // the tensor-core head dims at odd T (1, 7, 50, 197, 200), odd head counts, misaligned
        // pointers, large logits, and T past one staged chunk (256 rows; 128 at dh = 128)
        {{3, 1, 3, 32}, 1.f, 0, "(T = 1)"},
        {{2, 7, 5, 64}, 1.f, 0, "(T = 7, odd heads)"},
        {{5, 50, 3, 64}, 1.f, 0, "(encoder T, odd heads)"},
        {{3, 50, 12, 64}, 1.f, 1, "(encoder, misaligned)"},
        {{2, 197, 7, 32}, 1.f, 0, "(decoder T, odd heads)"},
        {{2, 197, 16, 32}, 1.f, 3, "(decoder, misaligned)"},
        {{2, 197, 4, 32}, 6.f, 0, "(decoder, large logits)"},
        {{3, 50, 4, 64}, 6.f, 0, "(encoder, large logits)"},
        {{2, 200, 3, 64}, 1.f, 0, "(T = 200)"},
        {{1, 7, 3, 128}, 1.f, 0, "(dh = 128, T = 7)"},
        {{1, 300, 3, 32}, 1.f, 0, "(T = 300: two staged chunks)"},
        {{1, 197, 2, 128}, 3.f, 1, "(dh = 128, two chunks, peaky, misaligned)"},
        // bf16 storage (qkv, dout, out, dqkv): both paths, the SIMT fallback head dims included
        {{2, 17, 3, 4}, 1.f, 0, "(tc: simt fallback)", DType::kBF16},
        {{2, 33, 3, 5}, 1.f, 0, "(odd dh: scalar loads)", DType::kBF16},
        {{1, 100, 2, 37}, 1.f, 0, "(odd dh, 2 dims per lane)", DType::kBF16},
        {{3, 65, 4, 8}, 1.f, 1, "(misaligned)", DType::kBF16},
        {{3, 1, 3, 32}, 1.f, 0, "(T = 1)", DType::kBF16},
        {{2, 7, 5, 64}, 1.f, 0, "(T = 7, odd heads)", DType::kBF16},
        {{5, 50, 3, 64}, 1.f, 0, "(encoder T, odd heads)", DType::kBF16},
        {{3, 50, 12, 64}, 1.f, 1, "(encoder, misaligned)", DType::kBF16},
        {{2, 197, 7, 32}, 1.f, 0, "(decoder T, odd heads)", DType::kBF16},
        {{2, 197, 16, 32}, 1.f, 3, "(decoder, misaligned)", DType::kBF16},
        {{2, 197, 4, 32}, 6.f, 0, "(decoder, large logits)", DType::kBF16},
        {{2, 200, 3, 64}, 1.f, 0, "(T = 200)", DType::kBF16},
        {{1, 7, 3, 128}, 1.f, 0, "(dh = 128, T = 7)", DType::kBF16},
        {{1, 300, 3, 32}, 1.f, 0, "(T = 300: two staged chunks)", DType::kBF16},
        {{1, 197, 2, 128}, 3.f, 1, "(dh = 128, two chunks, peaky, misaligned)", DType::kBF16},
        {{1, 257, 16, 80}, 1.f, 0, "(tc: simt fallback)", DType::kBF16},
    };
    int failures = 0;
    uint64_t seed = 1234;
    for (const Case& c : cases) failures += run_case(c, seed += 10, paths);
    for (AttentionPath path : paths) failures += bad_arguments(path);
    if (do_bench) bench_table(paths);
    std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
}
