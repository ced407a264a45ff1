// Device check of the memory-bound kernels' bf16 storage (needs a GPU; not part of the addon build):
//   nvcc -std=c++17 -O3 -arch=sm_90 -I. -Inative cuda/dev/elementwise_bf16_check.cu -o /tmp/elementwise_bf16_check
// The launchers of cuda/layernorm.cuh, cuda/optim.cuh (GELU, AdamW with params_bf16, the flat
// conversion) and cuda/tokens.cuh run twice on the device, the float instantiation on bf16 inputs
// widened to fp32 and the bf16 instantiation on the bf16 inputs, with the criteria of
// cuda/dev/elementwise_bf16_emulate.cu (which runs the same bodies on the CPU): bf16 outputs equal
// the fp32 outputs rounded to nearest even, fp32 outputs (statistics, dinp, dw, db, x, z, dcls,
// dmask, the AdamW state) are the same bits. Exit status non-zero on any FAIL.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/act.h"
#include "cuda/dev/check_common.h"
#include "cuda/layernorm.cuh"
#include "cuda/optim.cuh"
#include "cuda/tokens.cuh"

namespace {

namespace ec = emae::cuda;
using bf16 = __nv_bfloat16;
using emae::bf16_from_float;
using emae::float_from_bf16;
using emae::dev::random_vector;

int failures = 0;
void report(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// A device buffer of n T, uploaded from / downloaded to a host vector. uint16_t stands for bf16 on the host.
template <class T>
struct Buf {
  emae::dev::DeviceBuffer<T> d;
  size_t n;
  explicit Buf(size_t n_) : d(n_), n(n_) {}
  template <class H>
  Buf(const std::vector<H>& h) : d(h.size()), n(h.size()) {
    static_assert(sizeof(H) == sizeof(T));
    EMAE_CUDA_CHECK(cudaMemcpy(d.ptr, h.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  template <class H = T>
  std::vector<H> get() const {
    static_assert(sizeof(H) == sizeof(T));
    EMAE_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<H> h(n);
    EMAE_CUDA_CHECK(cudaMemcpy(h.data(), d.ptr, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  T* p() { return d.ptr; }
};
std::vector<uint16_t> narrow(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float x : v) out.push_back(bf16_from_float(x));
  return out;
}
std::vector<float> widen(const std::vector<uint16_t>& v) {
  std::vector<float> out;
  for (uint16_t x : v) out.push_back(float_from_bf16(x));
  return out;
}
bool rounded_equal(const std::vector<uint16_t>& n16, const std::vector<float>& f32) {
  if (n16.size() != f32.size()) return false;
  for (size_t i = 0; i < f32.size(); ++i)
    if (n16[i] != bf16_from_float(f32[i])) return false;
  return true;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void check_layernorm(int R, int C) {
  const std::string shape = " R=" + std::to_string(R) + " C=" + std::to_string(C);
  Buf<float> inp(random_vector((size_t)R * C, 1, 2.f)), w(random_vector(C, 2, 1.5f)), b(random_vector(C, 3, .5f));
  Buf<float> out32((size_t)R * C), mean32(R), rstd32(R), mean16(R), rstd16(R);
  Buf<bf16> out16((size_t)R * C);
  ec::layernorm_forward(out32.p(), mean32.p(), rstd32.p(), inp.p(), w.p(), b.p(), R, C, 1e-6f, 0);
  ec::layernorm_forward(out16.p(), mean16.p(), rstd16.p(), inp.p(), w.p(), b.p(), R, C, 1e-6f, 0);
  report(rounded_equal(out16.get<uint16_t>(), out32.get()) && same_bits(mean16.get(), mean32.get()) &&
             same_bits(rstd16.get(), rstd32.get()),
         "layernorm forward" + shape + ": bf16 out = fp32 out rounded, mean and rstd the same bits");

  const auto dout = narrow(random_vector((size_t)R * C, 4, 1.f));
  const auto dinp0 = random_vector((size_t)R * C, 5, .3f), dw0 = random_vector(C, 6, .3f), db0 = random_vector(C, 7, .3f);
  Buf<float> dout32(widen(dout)), dinp32(dinp0), dw32(dw0), db32(db0), dinp16(dinp0), dw16(dw0), db16(db0);
  Buf<bf16> dout16(dout);
  Buf<float> scratch(ec::layernorm_scratch_floats(R, C));
  ec::layernorm_backward(dinp32.p(), dw32.p(), db32.p(), (const float*)dout32.p(), inp.p(), w.p(), mean32.p(),
                         rstd32.p(), R, C, scratch.p(), 0);
  ec::layernorm_backward(dinp16.p(), dw16.p(), db16.p(), (const bf16*)dout16.p(), inp.p(), w.p(), mean32.p(),
                         rstd32.p(), R, C, scratch.p(), 0);
  report(same_bits(dinp16.get(), dinp32.get()) && same_bits(dw16.get(), dw32.get()) && same_bits(db16.get(), db32.get()),
         "layernorm backward" + shape + ": bf16 dout gives the fp32 dinp, dw, db bit for bit");
}

void check_gelu_and_convert(size_t n) {
  const auto x = narrow(random_vector(n, 8, 4.f)), g = narrow(random_vector(n, 9, 1.f));
  Buf<float> x32(widen(x)), out32(n), d32(widen(g));
  Buf<bf16> x16(x), out16(n), d16(g);
  ec::gelu_forward(out32.p(), (const float*)x32.p(), n, 0);
  ec::gelu_forward(out16.p(), (const bf16*)x16.p(), n, 0);
  report(rounded_equal(out16.get<uint16_t>(), out32.get()), "gelu forward n=" + std::to_string(n) + ": bf16 = fp32 rounded");
  ec::gelu_backward(d32.p(), (const float*)x32.p(), (const float*)d32.p(), n, 0);  // in place, as the MLP calls it
  ec::gelu_backward(d16.p(), (const bf16*)x16.p(), (const bf16*)d16.p(), n, 0);
  report(rounded_equal(d16.get<uint16_t>(), d32.get()), "gelu backward n=" + std::to_string(n) + ": bf16 = fp32 rounded");

  const auto src = random_vector(n, 10, 100.f);
  Buf<float> s(src);
  Buf<bf16> dst(n);
  ec::convert_to_bf16_flat(dst.p(), s.p(), n, 0);
  report(rounded_equal(dst.get<uint16_t>(), src), "convert_to_bf16_flat n=" + std::to_string(n) + ": nearest even");
}

void check_adamw() {
  const std::vector<ec::DeviceSegment> segs = {{0, 1000, 1, 1.0}, {1100, 37, 0, 0.65}, {1137, 200000, 1, 0.8}};
  const size_t total = 201137;
  const emae::AdamWScalars s{1e-3f, .9f, .95f, 1e-8f, .05f, 1 - .9f * .9f, std::sqrt(1 - .95f * .95f)};
  Buf<ec::DeviceSegment> table(segs);
  auto v0 = random_vector(total, 14, 1e-3f);
  for (float& x : v0) x = std::fabs(x);
  const std::vector<uint16_t> sentinel(total, 0x1234);
  auto in_segment = [](size_t k) { return k < 1000 || k >= 1100; };
  for (int decided = 0; decided < 2; ++decided) {
    const std::string name = decided ? "adamw_decided (clipped)" : "adamw";
    Buf<float> p0(random_vector(total, 11, 1.f)), g0(random_vector(total, 12, .1f)), m0(random_vector(total, 13, .01f)),
        vv0(v0);
    Buf<float> p1(random_vector(total, 11, 1.f)), g1(random_vector(total, 12, .1f)), m1(random_vector(total, 13, .01f)),
        vv1(v0);
    Buf<bf16> copy(sentinel);
    emae::StepStatus status{};
    status.grad_norm_sq = 1e6;  // norm 1000 > clip 1: clipped
    Buf<emae::StepStatus> st(std::vector<emae::StepStatus>{status});
    Buf<emae::StepDecision> dec(1);
    const int count = (int)segs.size();
    if (decided) {
      ec::adamw_decided(p0.p(), g0.p(), m0.p(), vv0.p(), nullptr, table.p(), count, s, st.p(), 1.f, true, dec.p(), 0);
      ec::adamw_decided(p1.p(), g1.p(), m1.p(), vv1.p(), copy.p(), table.p(), count, s, st.p(), 1.f, true, dec.p(), 0);
    } else {
      ec::adamw(p0.p(), g0.p(), m0.p(), vv0.p(), nullptr, table.p(), count, s, 0);
      ec::adamw(p1.p(), g1.p(), m1.p(), vv1.p(), copy.p(), table.p(), count, s, 0);
    }
    const auto params = p1.get();
    report(same_bits(params, p0.get()) && same_bits(g1.get(), g0.get()) && same_bits(m1.get(), m0.get()) &&
               same_bits(vv1.get(), vv0.get()),
           name + " with params_bf16: the fp32 state the same bits as without");
    const auto c = copy.get<uint16_t>();
    bool ok = true;
    for (size_t k = 0; k < total; ++k) ok = ok && c[k] == (in_segment(k) ? bf16_from_float(params[k]) : 0x1234);
    report(ok, name + " with params_bf16: the copy = the new params rounded over the segments, untouched elsewhere");
  }
  // refused (non-finite loss): the copy untouched
  Buf<float> p(random_vector(total, 11, 1.f)), g(random_vector(total, 12, .1f)), m(random_vector(total, 13, .01f)), v(v0);
  Buf<bf16> copy(sentinel);
  emae::StepStatus status{};
  status.losses.loss = NAN;
  Buf<emae::StepStatus> st(std::vector<emae::StepStatus>{status});
  Buf<emae::StepDecision> dec(1);
  ec::adamw_decided(p.p(), g.p(), m.p(), v.p(), copy.p(), table.p(), (int)segs.size(), s, st.p(), 0.f, true, dec.p(), 0);
  report(copy.get<uint16_t>() == sentinel && same_bits(p.get(), random_vector(total, 11, 1.f)),
         "adamw_decided (refused) with params_bf16: nothing changes, the copy included");
}

void check_tokens() {
  emae::PartGeometry geo{};
  geo.batch = 4, geo.parts = 4, geo.visible = 49, geo.grid = 14, geo.num_patches = 196, geo.patch = 16, geo.channels = 3,
  geo.image = 224;
  const int B = geo.batch, K = geo.parts, V = geo.visible, N = geo.num_patches, S = B * K;
  const int P = geo.patch * geo.patch * geo.channels, D = 192, Dd = 128;
  std::vector<int32_t> perm(B * N);
  for (int b = 0; b < B; ++b)
    for (int n = 0; n < N; ++n) perm[b * N + n] = (n * 37 + 11 * b) % N;  // 37 is prime to 196: a permutation
  Buf<int32_t> dperm(perm), position_of(B * N);
  ec::inverse_permutation(position_of.p(), dperm.p(), B, N, 0);
  Buf<float> images(random_vector((size_t)B * geo.channels * geo.image * geo.image, 20, 1.f));

  Buf<float> cols32((size_t)S * V * P);
  Buf<bf16> cols16((size_t)S * V * P);
  ec::gather_visible_patches(cols32.p(), images.p(), dperm.p(), geo, 0);
  ec::gather_visible_patches(cols16.p(), images.p(), dperm.p(), geo, 0);
  report(rounded_equal(cols16.get<uint16_t>(), cols32.get()), "gather_visible_patches: bf16 = fp32 rounded");

  const auto emb = narrow(random_vector((size_t)S * V * D, 21, 1.f));
  Buf<float> emb32(widen(emb)), cls(random_vector(D, 22, .1f)), pos(random_vector((size_t)(1 + N) * D, 23, 1.f));
  Buf<bf16> emb16(emb);
  Buf<float> x32((size_t)S * (1 + V) * D), x16((size_t)S * (1 + V) * D);
  ec::encoder_tokens_forward(x32.p(), (const float*)emb32.p(), cls.p(), pos.p(), dperm.p(), geo, D, 0);
  ec::encoder_tokens_forward(x16.p(), (const bf16*)emb16.p(), cls.p(), pos.p(), dperm.p(), geo, D, 0);
  report(same_bits(x16.get(), x32.get()), "encoder_tokens_forward: bf16 emb gives the fp32 x bit for bit");

  Buf<float> dx(random_vector((size_t)S * (1 + V) * D, 24, 1.f)), dcls32(random_vector(D, 25, .1f)),
      dcls16(random_vector(D, 25, .1f)), scratch(ec::column_sum_scratch_floats(S, D));
  Buf<float> demb32((size_t)S * V * D);
  Buf<bf16> demb16((size_t)S * V * D);
  ec::encoder_tokens_backward(demb32.p(), dcls32.p(), dx.p(), geo, D, scratch.p(), 0);
  ec::encoder_tokens_backward(demb16.p(), dcls16.p(), dx.p(), geo, D, scratch.p(), 0);
  report(rounded_equal(demb16.get<uint16_t>(), demb32.get()) && same_bits(dcls16.get(), dcls32.get()),
         "encoder_tokens_backward: bf16 demb = fp32 rounded, dcls the same bits");

  const auto y = narrow(random_vector((size_t)S * (1 + V) * Dd, 26, 1.f));
  Buf<float> y32(widen(y)), mask(random_vector(Dd, 27, .1f)), dpos(random_vector((size_t)(1 + N) * Dd, 28, 1.f));
  Buf<bf16> y16(y);
  Buf<float> z32((size_t)S * (1 + N) * Dd), z16((size_t)S * (1 + N) * Dd);
  ec::decoder_tokens_forward(z32.p(), (const float*)y32.p(), mask.p(), dpos.p(), position_of.p(), geo, Dd, 0);
  ec::decoder_tokens_forward(z16.p(), (const bf16*)y16.p(), mask.p(), dpos.p(), position_of.p(), geo, Dd, 0);
  report(same_bits(z16.get(), z32.get()), "decoder_tokens_forward: bf16 y gives the fp32 z bit for bit");

  Buf<float> dz(random_vector((size_t)S * (1 + N) * Dd, 29, 1.f)), dmask32(random_vector(Dd, 30, .1f)),
      dmask16(random_vector(Dd, 30, .1f)), dscratch(ec::decoder_tokens_scratch_floats(geo, Dd));
  Buf<float> dy32((size_t)S * (1 + V) * Dd);
  Buf<bf16> dy16((size_t)S * (1 + V) * Dd);
  ec::decoder_tokens_backward(dy32.p(), dmask32.p(), dz.p(), dperm.p(), position_of.p(), geo, Dd, dscratch.p(), 0);
  ec::decoder_tokens_backward(dy16.p(), dmask16.p(), dz.p(), dperm.p(), position_of.p(), geo, Dd, dscratch.p(), 0);
  report(rounded_equal(dy16.get<uint16_t>(), dy32.get()) && same_bits(dmask16.get(), dmask32.get()),
         "decoder_tokens_backward: bf16 dy = fp32 rounded, dmask the same bits");
}

}  // namespace

int main() {
  try {
    check_layernorm(37, 200);
    check_layernorm(3152, 768);  // vit-base width, 13 row chunks in the parameter sums
    check_gelu_and_convert(1 << 20);
    check_adamw();
    check_tokens();
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 2;
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
