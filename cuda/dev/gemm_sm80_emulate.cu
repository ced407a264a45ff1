// Host-only check (no GPU; nvcc compiles it, test/cuda-emulation.test.ts runs it) of gemm_sm80.cuh's index math, using the header's own constexpr helpers.
// For A and B, each K-major and MN-major: (1) the tile's swizzle is a bijection; (2) every ldmatrix
// phase and every 8-thread cp.async phase hits 8 distinct 16-byte bank groups (also under any
// 16-byte shift of the base); (3) per-lane precomputed offsets + the tile steps (Frag::step: an XOR
// for MN-major tiles) == the full swizzle; (4) a functional emulation of the kernel (the header's
// copy_tile issuing cp.async with src-size zero fill, each read checked to stay inside the stored
// matrix and the split's K piece; stages, wait_group accounting; the header's Frag offsets and
// ldmatrix form, ldmatrix[.trans] and mma.m16n8k16 fragment layouts as the PTX ISA defines them)
// against a reference, for K-major and MN-major (stored (K, M) / (K, N)) operands, its stores
// through the header's own store_epilogue and split-K partials through gemm.cuh's reduce_output, so
// the fused epilogues run the code the GPU runs: GELU forward (C = pre-activation and gelu_out) and
// backward (C ⊙ gelu'(gelu_inp)), split-K off and on; and the dweight GEMM whose A comes from
// gemm_bf16.cuh's conversion kernel with the bias gradient's row sums (bf16_convert_emulate.h),
// which must equal column_sum_accumulate's sums bit for bit.
//   nvcc -std=c++17 -O2 --expt-relaxed-constexpr -arch=sm_80 -I. -Inative cuda/dev/gemm_sm80_emulate.cu -o /tmp/e
// Mutation check of the fused epilogues (one fault at a time in a copy of the headers): all 14 real
// faults fail this program: gelu_out = the pre-activation, gelu' applied before bias/residual,
// gelu_inp read at row·N instead of row·ldc, the tanh GELU, the reduce without the GELU, the GELU
// applied to every split partial, the plain instantiation for a GELU GEMM; row sums missing a
// tile's last column, added in reverse column order, read before the barrier, no barrier before
// the next tile, a chunk of one tile, partials at chunk·ld_dst, padding columns not zeroed.
// Mutation check of the MN-major operands (one fault at a time in gemm_sm80.cuh): all 11 fail this
// program: swizzle_mn without its XOR, XOR-ed with (k/2)%8 or into the chunk's high bits (ldmatrix
// bank conflicts); kTrans false for MN-major tiles (no .trans: wrong products); Frag::step adding
// instead of XOR-ing; A's matrices 1 and 2 swapped; B's k rows of the K-major mapping; the copy
// bounded on K instead of M/N, without the K-row bound, at the K-major global address, or with its
// chunk origin along the wrong axis. Not covered here: the kernel's own ldmatrix asm line (it calls
// detail::ldmatrix_frag, which follows Frag::kTrans; gemm_check.cu's MN-major cases check it on a GPU).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <set>
#include <deque>
#include <cmath>
#include <string>
#include "cuda/dev/bf16_convert_emulate.h"
#include "cuda/gemm_sm80.cuh"
using namespace emae::cuda::sm80;
using T = Traits;
using emae::cuda::GemmBf16Params;
static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } } while (0)

// One operand's tile (A when kIsA, else B; K-major or MN-major): the swizzle is a bijection onto the
// tile's bytes; every ldmatrix phase (8 lanes: one matrix) and every 8-thread cp.async phase hits 8
// distinct 16-byte bank groups, also under any 16-byte shift of the base; per-lane offsets plus
// Frag::step / the copy row step equal the full offsets; every chunk is copied once per K-tile.
template <bool kIsA, bool kMn>
static int check_operand() {
  using F = Frag<kIsA, kMn>;
  using Tl = typename F::Tl;
  const int rows = kIsA ? T::kBM : T::kBN;
  const int tile_rows = kMn ? T::kBK : rows;  // the tile's own rows (k rows when MN-major)
  const char* name = kIsA ? (kMn ? "A mn-major" : "A k-major") : (kMn ? "B mn-major" : "B k-major");
  {
    std::set<int> seen;
    for (int r = 0; r < tile_rows; ++r)
      for (int c = 0; c < Tl::kChunksPerRow; ++c) {
        const int o = Tl::offset(r, c);
        CHECK(o % 16 == 0 && o >= 0 && o < rows * T::kBK * 2, "%s: offset range r%d c%d", name, r, c);
        CHECK(seen.insert(o).second, "%s: swizzle collision r%d c%d", name, r, c);
      }
  }
  int phases = 0;
  for (int shift = 0; shift < 128; shift += 16) {
    for (int warp = 0; warp < T::kThreads / 32; ++warp) {
      const int w0 = kIsA ? (warp / T::kWarpsN) * T::kWarpM : (warp % T::kWarpsN) * T::kWarpN;
      const int blocks = kIsA ? T::kTilesM : T::kTilesN / 2, block_rows = 16;  // m16 tiles, n16 pairs
      for (int q = 0; q < T::kKSteps; ++q)
        for (int i = 0; i < blocks; ++i)
          for (int ph = 0; ph < 4; ++ph) {
            std::set<int> g;
            for (int l = 8 * ph; l < 8 * ph + 8; ++l) {
              const int full = F::offset(l, w0 + i * block_rows, q);
              const int fast = F::step(F::offset(l, w0, q), i * block_rows);
              CHECK(full == fast, "%s: step shortcut warp%d q%d i%d lane%d: %d vs %d", name, warp, q, i, l, full, fast);
              g.insert(((shift + full) / 16) % 8);
            }
            CHECK(g.size() == 8, "%s: ldmatrix conflict warp%d q%d i%d ph%d", name, warp, q, i, ph);
            ++phases;
          }
    }
    for (int i = 0; i < Tl::kCopies; ++i)
      for (int t0 = 0; t0 < T::kThreads; t0 += 8) {
        std::set<int> g;
        for (int t = t0; t < t0 + 8; ++t) {
          const int full = Tl::offset(Tl::copy_row(t, i), Tl::copy_chunk(t));
          const int fast = Tl::offset(Tl::copy_row(t, 0), Tl::copy_chunk(t)) + i * Tl::kCopyRowStep * Tl::kRowBytes;
          CHECK(full == fast, "%s: copy shortcut", name);
          g.insert(((shift + full) / 16) % 8);
        }
        CHECK(g.size() == 8, "%s: cp.async conflict i%d t0 %d", name, i, t0);
        ++phases;
      }
  }
  // every (mn, k) chunk of the tile copied exactly once per K-tile, into the tile slot ldmatrix reads for it
  std::set<std::pair<int, int>> cov;
  for (int t = 0; t < T::kThreads; ++t)
    for (int i = 0; i < Tl::kCopies; ++i) {
      const int mn = Tl::copy_mn(t, i), k = Tl::copy_k(t, i);
      CHECK(mn >= 0 && mn < rows && k >= 0 && k < T::kBK && (kMn ? mn % 8 : k % 8) == 0, "%s: copy origin", name);
      CHECK(cov.insert({mn, k}).second, "%s: double copy", name);
      const int o = Tl::offset(Tl::copy_row(t, i), Tl::copy_chunk(t));
      CHECK(o == (kMn ? Tl::offset(k, mn / 8) : Tl::offset(mn, k / 8)), "%s: copy slot of (%d, %d)", name, mn, k);
    }
  CHECK((int)cov.size() == rows * T::kChunks, "%s: copy coverage", name);
  return phases;
}

static void check_banks() {
  const int phases = check_operand<true, false>() + check_operand<false, false>() + check_operand<true, true>() +
                     check_operand<false, true>();
  printf("bank check: %d phases (8 base shifts; A and B, K-major and MN-major) checked\n", phases);
}

// ---- functional emulation ----
static uint16_t bf(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }  // exact for small ints
static float fb(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static uint16_t bf_rn(float f) {  // round to nearest even (finite f): an implementation of its own, not the header's
  uint32_t u; memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

// cp.async on the host, for the header's copy_tile: 16 bytes into the emulated shared memory at
// offset dst, the first src_bytes read from src, the rest zeros. Each read must be 16-byte aligned
// and inside the operand's stored matrix ((mn_end, K) K-major, (K, mn_end) MN-major: never past K,
// M or N, whatever the padding holds) and inside the split's K piece.
struct HostCopy {
  std::vector<uint8_t>* smem;
  const uint16_t* base; size_t size; int ld; bool mn_major; int mn_end, k_lo, k_hi;
  void operator()(uint32_t dst, const emae::cuda::bf16* src, int bytes) const {
    CHECK(dst % 16 == 0 && dst + 16 <= smem->size(), "cp.async destination %u", dst);
    const size_t e = reinterpret_cast<const uint16_t*>(src) - base;
    CHECK(bytes >= 0 && bytes <= 16 && bytes % 2 == 0, "src-size %d", bytes);
    if (bytes) {
      CHECK(e % 8 == 0 && e + bytes / 2 <= size, "cp.async source %zu (+%d bytes) misaligned or outside the array", e, bytes);
      const int row = (int)(e / ld), col = (int)(e % ld), n = bytes / 2;
      const int mn_first = mn_major ? col : row, mn_last = mn_major ? col + n - 1 : row;
      const int k_first = mn_major ? row : col, k_last = mn_major ? row : col + n - 1;
      CHECK(mn_last < mn_end && k_first >= k_lo && k_last < k_hi,
            "cp.async reads (mn %d-%d, k %d-%d) outside (mn < %d, k in [%d, %d))", mn_first, mn_last, k_first, k_last,
            mn_end, k_lo, k_hi);
    } else {
      CHECK(reinterpret_cast<const uint16_t*>(src) == base, "an empty copy's address is the operand's base");
    }
    uint8_t* d = smem->data() + dst;
    memset(d, 0, 16);
    if (bytes && e + bytes / 2 <= size) memcpy(d, base + e, bytes);
  }
};

// ldmatrix.x4 (kTrans: .trans) for one warp, as the PTX ISA defines it: lanes 8j … 8j+7 give the
// addresses of the 8 rows (8 bf16 each) of matrix j; register j of lane L holds row L/4, elements
// 2(L%4), 2(L%4)+1 of matrix j, or with .trans elements L/4 of rows 2(L%4), 2(L%4)+1.
// out[L][j][e]: element e of register j of lane L. Addresses must be 16-byte aligned and in [lo, hi).
static void ldmatrix_x4(const uint8_t* stage, const int* off, bool trans, int lo, int hi, uint16_t (*out)[4][2]) {
  for (int L = 0; L < 32; ++L) CHECK(off[L] % 16 == 0 && off[L] >= lo && off[L] + 16 <= hi, "ldmatrix row address %d", off[L]);
  auto row_element = [&](int lane, int e) { uint16_t v; memcpy(&v, stage + off[lane] + 2 * e, 2); return v; };
  for (int L = 0; L < 32; ++L)
    for (int j = 0; j < 4; ++j)
      for (int e = 0; e < 2; ++e)
        out[L][j][e] = trans ? row_element(8 * j + 2 * (L % 4) + e, L / 4) : row_element(8 * j + L / 4, 2 * (L % 4) + e);
}

// The kernel's grid for p (splits and k_split as the caller chose them) on bf16 A and B stored as
// p says (K-major (M, lda), (N, ldb), or MN-major (K, lda), (K, ldb)): the header's copy_tile through
// the cp.async pipeline (stages, wait_group accounting), its Frag offsets and ldmatrix form through
// ldmatrix and mma.m16n8k16 as the PTX ISA defines them, the stores through the header's
// store_epilogue (the instantiation the launcher picks); written[split][row][col] counts stores.
template <bool kAMn, bool kBMn>
static void emulate_kernel_as(const GemmBf16Params& p, const std::vector<uint16_t>& A, const std::vector<uint16_t>& B,
                              std::vector<int>& written) {
  using FA = Frag<true, kAMn>;
  using FB = Frag<false, kBMn>;
  const int M = p.M, N = p.N, K = p.K;
  const int k_split = p.splits == 1 ? std::max(K, 1) : p.k_split;  // launcher normalisation as in launch()
  const int tiles_m = (M + T::kBM - 1) / T::kBM, tiles_n = (N + T::kBN - 1) / T::kBN;
  const bool gelu_kernel = emae::cuda::gelu_instantiation(p);
  auto store = [&](int split, int row, int col, float v0, float v1) {
    for (int j = 0; j < 2; ++j)
      if (row < M && col + j < N) written[((size_t)split * M + row) * N + col + j]++;
    if (gelu_kernel) emae::cuda::store_epilogue<true>(p, split, row, col, v0, v1);
    else emae::cuda::store_epilogue<false>(p, split, row, col, v0, v1);
  };
  std::vector<uint8_t> smem(T::kSmemBytes);
  const auto* a_base = reinterpret_cast<const emae::cuda::bf16*>(A.data());
  const auto* b_base = reinterpret_cast<const emae::cuda::bf16*>(B.data());
  for (int split = 0; split < p.splits; ++split)
    for (int tm = 0; tm < tiles_m; ++tm)
      for (int tn = 0; tn < tiles_n; ++tn) {
        const int m0 = tm * T::kBM, n0 = tn * T::kBN;
        const int k_begin = split * k_split, k_end = std::min(K, k_begin + k_split);
        const int k_tiles = k_end > k_begin ? (k_end - k_begin + T::kBK - 1) / T::kBK : 0;
        memset(smem.data(), 0xAB, smem.size());  // poison
        std::vector<int> stage_tile(T::kStages, -1);
        std::deque<std::vector<std::pair<int,int>>> groups;  // per group: (stage, tile)
        std::vector<std::pair<int,int>> open;
        const HostCopy copy_a{&smem, A.data(), A.size(), p.lda, kAMn, M, k_begin, k_end};
        const HostCopy copy_b{&smem, B.data(), B.size(), p.ldb, kBMn, N, k_begin, k_end};
        auto load_stage = [&](int stage, int kt) {
          const int k0 = k_begin + kt * T::kBK;
          const uint32_t dst = stage * T::kStageBytes;
          for (int tid = 0; tid < T::kThreads; ++tid) {
            emae::cuda::sm80::copy_tile<typename FA::Tl>(copy_a, dst, a_base, p.lda, m0, M, k0, k_end, tid);
            emae::cuda::sm80::copy_tile<typename FB::Tl>(copy_b, dst + T::kStageBytesA, b_base, p.ldb, n0, N, k0, k_end, tid);
          }
          open.push_back({stage, kt});
        };
        auto commit = [&]() { groups.push_back(open); open.clear(); };
        auto wait = [&](int n) { while ((int)groups.size() > n) { for (auto& st : groups.front()) stage_tile[st.first] = st.second; groups.pop_front(); } };
        // registers: acc[warp][lane][i][j][4]
        std::vector<float> acc((size_t)T::kThreads * T::kTilesM * T::kTilesN * 4, 0.f);
        auto ACC = [&](int tid, int i, int j, int r) -> float& { return acc[(((size_t)tid * T::kTilesM + i) * T::kTilesN + j) * 4 + r]; };
        for (int s = 0; s < T::kStages - 1; ++s) { if (s < k_tiles) load_stage(s, s); commit(); }
        for (int kt = 0; kt < k_tiles; ++kt) {
          wait(T::kStages - 2);
          CHECK(stage_tile[kt % T::kStages] == kt, "stage %d holds tile %d, want %d", kt % T::kStages, stage_tile[kt % T::kStages], kt);
          const int next = kt + T::kStages - 1;
          if (next < k_tiles) { CHECK(next % T::kStages != kt % T::kStages, "refill of the stage in use"); load_stage(next % T::kStages, next); }
          commit();
          const uint8_t* stage = smem.data() + (kt % T::kStages) * T::kStageBytes;
          for (int warp = 0; warp < T::kThreads / 32; ++warp) {
            const int wm0 = (warp / T::kWarpsN) * T::kWarpM, wn0 = (warp % T::kWarpsN) * T::kWarpN;
            for (int q = 0; q < T::kKSteps; ++q) {
              int a_off[32], b_off[32];  // the kernel's per-lane a_off[q], b_off[q]
              for (int l = 0; l < 32; ++l) {
                a_off[l] = FA::offset(l, wm0, q);
                b_off[l] = FB::offset(l, wn0, q);
              }
              uint16_t af[T::kTilesM][32][4][2];
              for (int i = 0; i < T::kTilesM; ++i) {
                int at[32];
                for (int l = 0; l < 32; ++l) at[l] = FA::step(a_off[l], i * 16);
                ldmatrix_x4(stage, at, FA::kTrans, 0, T::kStageBytesA, af[i]);
              }
              for (int jn = 0; jn < T::kTilesN; jn += 2) {
                uint16_t bfr[32][4][2];
                int at[32];
                for (int l = 0; l < 32; ++l) at[l] = T::kStageBytesA + FB::step(b_off[l], jn * 8);
                ldmatrix_x4(stage, at, FB::kTrans, T::kStageBytesA, T::kStageBytes, bfr);
                for (int i = 0; i < T::kTilesM; ++i)
                  for (int h = 0; h < 2; ++h) {  // mma(acc[i][jn+h], a, b[2h], b[2h+1]) per the PTX m16n8k16 layouts
                    float Am[16][16], Bm[16][8];
                    for (int L = 0; L < 32; ++L) {
                      const int g = L / 4, t = L % 4;
                      for (int e = 0; e < 2; ++e) {
                        Am[g][2 * t + e] = fb(af[i][L][0][e]);
                        Am[g + 8][2 * t + e] = fb(af[i][L][1][e]);
                        Am[g][2 * t + 8 + e] = fb(af[i][L][2][e]);
                        Am[g + 8][2 * t + 8 + e] = fb(af[i][L][3][e]);
                        Bm[2 * t + e][g] = fb(bfr[L][2 * h][e]);
                        Bm[2 * t + 8 + e][g] = fb(bfr[L][2 * h + 1][e]);
                      }
                    }
                    for (int L = 0; L < 32; ++L) {
                      const int g = L / 4, t = L % 4;
                      for (int r = 0; r < 4; ++r) {
                        const int row = g + (r / 2) * 8, col = 2 * t + (r % 2);
                        float s = 0; for (int k = 0; k < 16; ++k) s += Am[row][k] * Bm[k][col];
                        ACC(warp * 32 + L, i, jn + h, r) += s;
                      }
                    }
                  }
              }
            }
          }
        }
        wait(0);
        for (int tid = 0; tid < T::kThreads; ++tid) {
          const int warp = tid / 32, lane = tid % 32;
          const int wm0 = (warp / T::kWarpsN) * T::kWarpM, wn0 = (warp % T::kWarpsN) * T::kWarpN;
          const int g = lane / 4, t = lane % 4;
          for (int i = 0; i < T::kTilesM; ++i)
            for (int jn = 0; jn < T::kTilesN; ++jn) {
              const int row = m0 + wm0 + i * 16 + g, col = n0 + wn0 + jn * 8 + 2 * t;
              store(split, row, col, ACC(tid, i, jn, 0), ACC(tid, i, jn, 1));
              store(split, row + 8, col, ACC(tid, i, jn, 2), ACC(tid, i, jn, 3));
            }
        }
      }
}

// The instantiation launch_layout picks for p.a_mn_major, p.b_mn_major.
static void emulate_kernel(const GemmBf16Params& p, const std::vector<uint16_t>& A, const std::vector<uint16_t>& B,
                           std::vector<int>& written) {
  if (p.a_mn_major) {
    if (p.b_mn_major) emulate_kernel_as<true, true>(p, A, B, written);
    else emulate_kernel_as<true, false>(p, A, B, written);
  } else {
    if (p.b_mn_major) emulate_kernel_as<false, true>(p, A, B, written);
    else emulate_kernel_as<false, false>(p, A, B, written);
  }
}

enum class Epi { kPlain, kGeluForward, kGeluBackward };
struct Case {
  int M, N, K, splits, k_split; bool acc, bias, res;
  Epi epi = Epi::kPlain;
  bool a_sums = false;  // the dweight GEMM: A and B converted from fp32 (A with the bias gradient's row sums)
  bool bf16 = false;    // bf16 activations (issue 11): gelu_inp bf16, C and gelu_out bf16 when C is assigned
                        // without a residual; with a_sums, dout and inp bf16 (the bf16 → bf16 transposing copy)
  bool a_mn = false, b_mn = false;  // A stored (K, M), B stored (K, N): read in place (a_mn_major, b_mn_major)
};
constexpr float kSentinel = 12345.5f;
constexpr double kBf16Round = 1.0 / 256;  // a bf16 store's rounding, relative (unit roundoff 2^-8)

// Integer cases (plain epilogue, small integer operands): every sum is exact in fp32, so outputs
// and split partials are compared bit for bit. Real cases (GELU, a_sums): random bf16 operands in
// [-1, 1), against a double reference on the bf16 inputs: |got − want| ≤ 1e-6 · Σ|terms| + 1e-7
// (fp32 sums of ≤ 600 terms land within 1e-7 · Σ|terms| here), the GELU outputs with that bound
// times max|gelu'| (1.13) plus 1e-6 · (1 + |want|) for the float erf/exp (a few ulp; the tanh
// approximation of GELU is off by up to 3e-4 and fails). Split-K partials are reduced with the
// header's reduce_output (gemm_reduce_kernel's body). bf16 cases: the same, against the reference on
// the bf16 values of gelu_inp, dout and inp, a bf16 C / gelu_out (widened to compare) also within
// its rounding, 2^-8 · (|want| + tol); the bf16 sentinels must stay.
static void emulate(const Case& cs, std::mt19937& rng) {
  const int M = cs.M, N = cs.N, K = cs.K;
  const bool real = cs.epi != Epi::kPlain || cs.a_sums;
  std::uniform_int_distribution<int> d(-3, 3);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto value = [&] { return real ? u(rng) : (float)d(rng); };
  // operands: A (M, lda), B (N, ldb) bf16, K-contiguous
  int lda = (K + 7) / 8 * 8 + 8, ldb = (K + 7) / 8 * 8;  // lda with extra padding
  std::vector<uint16_t> A, B;
  std::vector<float> a_sums0(M), a_sums(M), dout, inp;
  const int ld_dout = M + 3, ld_inp = N + 1;  // the fp32 sources of the a_sums cases: dout (K, M), inp (K, N)
  if (cs.a_sums) {
    lda = ldb = emae::cuda::bf16_ld(K);
    A.assign((size_t)M * lda, 0xFFFF);
    B.assign((size_t)N * ldb, 0xFFFF);
    dout.resize((size_t)K * ld_dout);
    inp.resize((size_t)K * ld_inp);
    for (auto& v : dout) v = u(rng) * 4.f;
    for (auto& v : inp) v = u(rng);
    for (int m = 0; m < M; ++m) a_sums[m] = a_sums0[m] = u(rng);
    if (cs.bf16) {  // bf16 dout and inp: the fp32 vectors keep their values for the reference
      std::vector<uint16_t> dout16(dout.size()), inp16(inp.size());
      for (size_t i = 0; i < dout.size(); ++i) dout[i] = fb(dout16[i] = bf_rn(dout[i]));
      for (size_t i = 0; i < inp.size(); ++i) inp[i] = fb(inp16[i] = bf_rn(inp[i]));
      CHECK(emae::dev::emulate_convert_with_row_sums(A.data(), a_sums.data(), dout16.data(), M, K, ld_dout), "A copy: a barrier not reached by every thread");
      CHECK(emae::dev::emulate_convert_to_bf16(B.data(), inp16.data(), N, K, ld_inp, true), "B copy: a barrier not reached by every thread");
    } else {
      CHECK(emae::dev::emulate_convert_with_row_sums(A.data(), a_sums.data(), dout.data(), M, K, ld_dout), "A conversion: a barrier not reached by every thread");
      CHECK(emae::dev::emulate_convert_to_bf16(B.data(), inp.data(), N, K, ld_inp, true), "B conversion: a barrier not reached by every thread");
    }
    for (int m = 0; m < M; ++m)
      for (int k = 0; k < lda; ++k) {
        const uint16_t want = k < K ? bf_rn(dout[(size_t)k * ld_dout + m]) : 0;
        CHECK(A[(size_t)m * lda + k] == want, "converted A(%d,%d) %04x vs %04x", m, k, A[(size_t)m * lda + k], want);
      }
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < ldb; ++k) {
        const uint16_t want = k < K ? bf_rn(inp[(size_t)k * ld_inp + n]) : 0;
        CHECK(B[(size_t)n * ldb + k] == want, "converted B(%d,%d) %04x vs %04x", n, k, B[(size_t)n * ldb + k], want);
      }
    double worst = 0;
    for (int m = 0; m < M; ++m) {  // bit for bit the separate column-sum pass; and near the double sum
      const float want = a_sums0[m] + emae::dev::column_sum_reference(dout.data(), K, ld_dout, m);
      CHECK(memcmp(&a_sums[m], &want, 4) == 0, "a_sums[%d] %.9g vs column_sum_accumulate's %.9g", m, a_sums[m], want);
      double exact = a_sums0[m], mag = fabs(a_sums0[m]);
      for (int k = 0; k < K; ++k) exact += dout[(size_t)k * ld_dout + m], mag += fabs(dout[(size_t)k * ld_dout + m]);
      CHECK(fabs(a_sums[m] - exact) <= 1e-6 * mag + 1e-6, "a_sums[%d] %.9g vs exact %.9g", m, a_sums[m], exact);
      worst = std::max(worst, fabs(a_sums[m] - exact) / (mag + 1e-30));
    }
    printf("  a_sums: %d rows over K=%d bitwise equal to column_sum_accumulate's order, worst rel err %.2e\n", M, K, worst);
  } else {
    // MN-major: (K, ld) with ld a multiple of 8 past M or N (the padding garbage too)
    if (cs.a_mn) lda = emae::cuda::bf16_ld(M) + 8;
    if (cs.b_mn) ldb = emae::cuda::bf16_ld(N) + 16;
    A.resize((size_t)(cs.a_mn ? K : M) * lda);
    B.resize((size_t)(cs.b_mn ? K : N) * ldb);
    auto fill = [&](std::vector<uint16_t>& X, int ld, int row_len, float garbage) {  // garbage past the stored row
      for (size_t i = 0; i < X.size(); ++i) X[i] = (int)(i % ld) < row_len ? (real ? bf_rn(value()) : bf(value())) : bf(garbage);
    };
    fill(A, lda, cs.a_mn ? M : K, 1000.f);
    fill(B, ldb, cs.b_mn ? N : K, -1000.f);
  }
  // A (m, k) and B (n, k) as the reference reads them
  auto av = [&](int m, int k) { return fb(cs.a_mn ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]); };
  auto bv = [&](int n, int k) { return fb(cs.b_mn ? B[(size_t)k * ldb + n] : B[(size_t)n * ldb + k]); };
  const int ldc = N + 3;
  std::vector<float> C((size_t)(M + 1) * ldc, kSentinel), bias(N), res((size_t)M * ldc), gelu_inp((size_t)M * ldc),
      gelu_out((size_t)(M + 1) * ldc, kSentinel);
  for (auto& v : bias) v = value();
  for (auto& v : res) v = value();
  for (auto& v : gelu_inp) v = 3.f * u(rng);
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      C[(size_t)r * ldc + c] = cs.acc || !real ? value() : std::nanf("");  // assigned outputs NaN-poisoned
      gelu_out[(size_t)r * ldc + c] = std::nanf("");
    }
  // bf16 outputs: bf16 copies of the poisoned buffers (sentinel → bf16(sentinel)), widened back after
  // the run; gelu_inp: its bf16 values, kept in the fp32 vector for the reference
  const bool out16 = cs.bf16 && !cs.acc && !cs.res;
  std::vector<uint16_t> C16(C.size()), gelu_out16(gelu_out.size()), gelu_inp16(gelu_inp.size());
  if (cs.bf16)
    for (size_t i = 0; i < gelu_inp.size(); ++i) gelu_inp[i] = fb(gelu_inp16[i] = bf_rn(gelu_inp[i]));
  const uint16_t sentinel16 = bf_rn(kSentinel), nan16 = 0x7fc0;
  auto narrow = [&](std::vector<uint16_t>& dst, const std::vector<float>& src) {
    for (size_t i = 0; i < src.size(); ++i) dst[i] = src[i] == kSentinel ? sentinel16 : std::isnan(src[i]) ? nan16 : bf_rn(src[i]);
  };
  auto widen = [&](std::vector<float>& dst, const std::vector<uint16_t>& src) {
    for (size_t i = 0; i < src.size(); ++i) dst[i] = src[i] == sentinel16 ? kSentinel : fb(src[i]);
  };
  if (out16) narrow(C16, C), narrow(gelu_out16, gelu_out);
  const std::vector<float> C0 = C;
  std::vector<float> partial((size_t)cs.splits * M * N, NAN);

  GemmBf16Params p;
  p.M = M; p.N = N; p.K = K;
  p.A = reinterpret_cast<const emae::cuda::bf16*>(A.data()); p.lda = lda;
  p.B = reinterpret_cast<const emae::cuda::bf16*>(B.data()); p.ldb = ldb;
  p.a_mn_major = cs.a_mn; p.b_mn_major = cs.b_mn;
  p.C = C.data(); p.ldc = ldc;
  p.accumulate = cs.acc;
  p.bias = cs.bias ? bias.data() : nullptr;
  p.residual = cs.res ? res.data() : nullptr;
  p.gelu_out = cs.epi == Epi::kGeluForward ? gelu_out.data() : nullptr;
  p.gelu_inp = cs.epi == Epi::kGeluBackward ? gelu_inp.data() : nullptr;
  if (cs.bf16 && cs.epi == Epi::kGeluBackward) p.gelu_inp = emae::ActIn(gelu_inp16.data(), emae::DType::kBF16);
  if (out16) {
    p.C = emae::Act(C16.data(), emae::DType::kBF16);
    if (cs.epi == Epi::kGeluForward) p.gelu_out = emae::Act(gelu_out16.data(), emae::DType::kBF16);
  }
  p.splits = cs.splits; p.k_split = cs.k_split;
  p.partial = cs.splits > 1 ? partial.data() : nullptr;
  try {
    emae::cuda::check_bf16_params(p);
  } catch (const std::exception& e) {
    CHECK(false, "check_bf16_params: %s", e.what());
    return;
  }
  std::vector<int> written((size_t)M * N * cs.splits, 0);
  emulate_kernel(p, A, B, written);
  for (auto w : written) CHECK(w == 1, "an output written %d times", w);
  const int k_split = cs.splits == 1 ? std::max(K, 1) : cs.k_split;
  if (cs.splits > 1) {
    if (!real)  // partials: exact integer sums of their K piece
      for (int s = 0; s < cs.splits; ++s)
        for (int r = 0; r < M; ++r)
          for (int c = 0; c < N; ++c) {
            float ps = 0; const int kb = s * k_split, ke = std::min(K, kb + k_split);
            for (int k = kb; k < ke; ++k) ps += av(r, k) * bv(c, k);
            const float pv = partial[((size_t)s * M + r) * N + c];
            CHECK(pv == ps, "partial s%d (%d,%d) %g vs %g", s, r, c, pv, ps);
          }
    for (size_t idx = 0; idx < (size_t)M * N; ++idx) emae::cuda::reduce_output(p, cs.splits, partial.data(), idx);
  }
  if (out16) widen(C, C16), widen(gelu_out, gelu_out16);

  double maxerr = 0, worst_ratio = 0;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      const size_t at = (size_t)r * ldc + c;
      if (!real) {  // integers: exact in fp32
        float want = 0; for (int k = 0; k < K; ++k) want += av(r, k) * bv(c, k);
        if (cs.acc) want += C0[at];
        if (cs.bias) want += bias[c];
        if (cs.res) want += res[at];
        CHECK(C[at] == want, "C(%d,%d) %g vs %g  case M%d N%d K%d", r, c, C[at], want, M, N, K);
        maxerr = std::max(maxerr, (double)fabs(C[at] - want));
        continue;
      }
      double want = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double x = (double)av(r, k) * bv(c, k);
        want += x; mag += fabs(x);
      }
      if (cs.acc) want += C0[at], mag += fabs(C0[at]);
      if (cs.bias) want += bias[c], mag += fabs(bias[c]);
      if (cs.res) want += res[at], mag += fabs(res[at]);
      const double tol = 1e-6 * mag + 1e-7;
      auto check = [&](const char* what, float got, double w, double t) {
        if (out16) t += kBf16Round * (fabs(w) + t);  // the store's rounding
        const double err = fabs((double)got - w);
        CHECK(err <= t, "%s(%d,%d) %.9g vs %.9g (tol %.2e)  case M%d N%d K%d", what, r, c, got, w, t, M, N, K);
        maxerr = std::max(maxerr, err != err ? INFINITY : err);
        worst_ratio = std::max(worst_ratio, err != err ? INFINITY : err / t);
      };
      if (cs.epi == Epi::kGeluBackward) {
        const double g = emae::gelu_grad((double)gelu_inp[at]), w = want * g;
        check("C", C[at], w, 1.13 * tol + 1e-6 * (1 + fabs(w)));
      } else {
        check("C", C[at], want, tol);
      }
      if (cs.epi == Epi::kGeluForward) {
        const double w = emae::gelu(want);
        check("gelu_out", gelu_out[at], w, 1.13 * tol + 1e-6 * (1 + fabs(w)));
      }
    }
  // untouched: columns ≥ N and the extra row, of C and gelu_out; gelu_out entirely unless asked
  for (int r = 0; r <= M; ++r)
    for (int c = 0; c < ldc; ++c) {
      const size_t at = (size_t)r * ldc + c;
      if (r == M || c >= N) CHECK(memcmp(&C[at], &C0[at], 4) == 0, "C sentinel (%d,%d)", r, c);
      if (cs.epi != Epi::kGeluForward && r < M && c < N) CHECK(std::isnan(gelu_out[at]), "gelu_out (%d,%d) written", r, c);
      if (r == M || c >= N) CHECK(gelu_out[at] == kSentinel, "gelu_out sentinel (%d,%d)", r, c);
    }
  static const char* epi_names[] = {"plain", "gelu-forward", "gelu-backward"};
  printf("case M=%d N=%d K=%d splits=%d k_split=%d acc=%d bias=%d res=%d %s%s%s%s: max err %g%s\n", M, N, K, cs.splits,
         k_split, cs.acc, cs.bias, cs.res, epi_names[(int)cs.epi], cs.a_sums ? " a_sums" : "",
         cs.a_mn ? (cs.b_mn ? " A,B mn-major" : " A mn-major") : cs.b_mn ? " B mn-major" : "",
         !cs.bf16 ? "" : out16 ? " bf16 in/out" : " bf16 in", maxerr,
         real ? (" (" + std::to_string(worst_ratio) + " of tol)").c_str() : "");
}

int main() {
  check_banks();
  std::mt19937 rng(1234);
  const Case cases[] = {
      {1, 1, 1, 1, 0, false, false, false},   {5, 3, 0, 1, 0, true, true, true},     {17, 9, 7, 1, 0, false, true, false},
      {128, 128, 32, 1, 0, false, false, false}, {129, 130, 33, 1, 0, true, false, true}, {200, 136, 100, 1, 0, false, true, true},
      {64, 256, 161, 1, 0, true, true, true}, {130, 70, 200, 3, 96, false, false, false}, {33, 129, 257, 5, 64, true, true, true},
      {257, 40, 64, 2, 32, false, false, false},
      // fused epilogues (issue 11): GELU forward (C = pre-activation, gelu_out = act) and backward
      // (C = (A·Bᵀ) ⊙ gelu'(gelu_inp)), with split-K off and on (the reduce applies the GELU once)
      {130, 70, 77, 1, 0, false, true, false, Epi::kGeluForward},
      {33, 129, 257, 5, 64, false, true, false, Epi::kGeluForward},
      {7, 9, 3, 1, 0, true, true, true, Epi::kGeluForward},
      {129, 40, 100, 1, 0, false, false, false, Epi::kGeluBackward},
      {70, 33, 300, 3, 128, false, false, false, Epi::kGeluBackward},
      {5, 131, 0, 1, 0, false, true, true, Epi::kGeluBackward},
      // the dweight GEMM with the bias gradient fused into A's conversion (+=, as the backward runs it)
      {70, 50, 300, 1, 0, true, false, false, Epi::kPlain, true},
      {33, 129, 600, 3, 224, true, false, false, Epi::kPlain, true},
      {129, 7, 5, 1, 0, true, false, false, Epi::kPlain, true},
      // bf16 activations (issue 11): bf16 C (qkv, fc1's pre and act: GELU forward), dinp ⊙ gelu'(bf16
      // gelu_inp) into a bf16 C, split-K off and on (the reduce stores the bf16 C); an fp32 C beside
      // bf16 GELU input; the dweight GEMM from bf16 dout and inp (its a_sums: the widened values)
      {130, 70, 77, 1, 0, false, true, false, Epi::kGeluForward, false, true},
      {33, 129, 257, 5, 64, false, true, false, Epi::kGeluForward, false, true},
      {129, 40, 100, 1, 0, false, true, false, Epi::kGeluBackward, false, true},
      {70, 33, 300, 3, 128, false, false, false, Epi::kGeluBackward, false, true},
      {5, 131, 0, 1, 0, false, true, false, Epi::kGeluBackward, false, true},
      {7, 9, 3, 1, 0, true, true, true, Epi::kGeluBackward, false, true},
      {33, 129, 600, 3, 224, true, false, false, Epi::kPlain, true, true},
      {129, 7, 5, 1, 0, true, false, false, Epi::kPlain, true, true},
      // MN-major operands read in place (ldmatrix.trans): A stored (K, M) (dweight's dout), B stored
      // (K, N) (dinp's weight, dweight's inp), both; odd sizes, edge tiles in M, N and K, split-K
      // (pieces end inside a tile's K rows), the fused epilogues; integer cases compare bit for bit
      {1, 1, 1, 1, 0, false, false, false, Epi::kPlain, false, false, true, false},
      {1, 1, 1, 1, 0, false, false, false, Epi::kPlain, false, false, false, true},
      {17, 9, 7, 1, 0, false, true, false, Epi::kPlain, false, false, true, true},
      {129, 130, 33, 1, 0, true, false, true, Epi::kPlain, false, false, true, false},
      {200, 136, 100, 1, 0, false, true, true, Epi::kPlain, false, false, false, true},
      {130, 257, 161, 1, 0, true, true, true, Epi::kPlain, false, false, true, true},
      {130, 70, 200, 3, 96, false, false, false, Epi::kPlain, false, false, true, false},
      {33, 129, 257, 5, 64, true, true, true, Epi::kPlain, false, false, false, true},
      {257, 40, 64, 2, 32, false, false, false, Epi::kPlain, false, false, true, true},
      {129, 40, 100, 1, 0, false, false, false, Epi::kGeluBackward, false, true, false, true},
      {70, 33, 300, 3, 128, false, false, false, Epi::kGeluBackward, false, true, false, true},
      {130, 70, 77, 1, 0, false, true, false, Epi::kGeluForward, false, true, true, true},
      {70, 50, 300, 1, 0, true, false, false, Epi::kPlain, false, true, true, true},
      {33, 129, 600, 3, 224, true, false, false, Epi::kPlain, false, true, true, true},
  };
  for (const auto& c : cases) emulate(c, rng);
  printf(fails ? "FAILED (%d)\n" : "ALL PASS\n", fails);
  return fails != 0;
}
