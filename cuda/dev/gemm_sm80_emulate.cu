// Host-only check (no GPU; nvcc compiles it, test/cuda-emulation.test.ts runs it) of gemm_sm80.cuh's index math, using the header's own constexpr helpers.
// (1) swizzle is a bijection per operand tile; (2) every ldmatrix phase and every 8-thread cp.async
// phase hits 8 distinct 16-byte bank groups (also under any 16-byte shift of the base);
// (3) per-lane precomputed offsets + constant tile steps == the full swizzle; (4) a functional
// emulation of the kernel (cp.async with src-size zero fill, stages, wait_group accounting, ldmatrix
// and mma.m16n8k16 fragment layouts as the PTX ISA defines them, store_epilogue) against a reference.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <random>
#include <set>
#include <deque>
#include "cuda/gemm_sm80.cuh"
using namespace emae::cuda::sm80;
using T = Traits;
static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 20) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } } while (0)

static void check_banks() {
  for (int rows : {T::kBM, T::kBN}) {
    std::set<int> seen;
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < T::kChunks; ++c) {
        int o = swizzle(r, c);
        CHECK(o % 16 == 0 && o >= 0 && o < rows * T::kRowBytes, "offset range r%d c%d", r, c);
        CHECK(seen.insert(o).second, "swizzle collision r%d c%d", r, c);
      }
  }
  int phases = 0;
  for (int shift = 0; shift < 128; shift += 16) {
    for (int warp = 0; warp < T::kThreads / 32; ++warp) {
      const int wm0 = (warp / T::kWarpsN) * T::kWarpM, wn0 = (warp % T::kWarpsN) * T::kWarpN;
      for (int q = 0; q < T::kKSteps; ++q) {
        for (int i = 0; i < T::kTilesM; ++i)
          for (int ph = 0; ph < 4; ++ph) {
            std::set<int> g;
            for (int l = 8 * ph; l < 8 * ph + 8; ++l) {
              int full = swizzle(wm0 + i * 16 + a_lane_row(l), 2 * q + a_lane_chunk(l));
              int fast = swizzle(wm0 + a_lane_row(l), 2 * q + a_lane_chunk(l)) + i * 16 * T::kRowBytes;
              CHECK(full == fast, "A shortcut");
              g.insert(((shift + full) / 16) % 8);
            }
            CHECK(g.size() == 8, "A ldmatrix conflict warp%d q%d i%d ph%d", warp, q, i, ph); ++phases;
          }
        for (int jn = 0; jn < T::kTilesN; jn += 2)
          for (int ph = 0; ph < 4; ++ph) {
            std::set<int> g;
            for (int l = 8 * ph; l < 8 * ph + 8; ++l) {
              int full = T::kStageBytesA + swizzle(wn0 + jn * 8 + b_lane_row(l), 2 * q + b_lane_chunk(l));
              int fast = T::kStageBytesA + swizzle(wn0 + b_lane_row(l), 2 * q + b_lane_chunk(l)) + jn * 8 * T::kRowBytes;
              CHECK(full == fast, "B shortcut");
              g.insert(((shift + full) / 16) % 8);
            }
            CHECK(g.size() == 8, "B ldmatrix conflict"); ++phases;
          }
      }
    }
    for (int op = 0; op < 2; ++op) {
      const int copies = op ? T::kCopiesB : T::kCopiesA;
      for (int i = 0; i < copies; ++i)
        for (int t0 = 0; t0 < T::kThreads; t0 += 8) {
          std::set<int> g;
          for (int t = t0; t < t0 + 8; ++t) {
            int full = swizzle(copy_row(t, i), copy_chunk(t));
            int fast = swizzle(copy_row(t, 0), copy_chunk(t)) + i * T::kCopyRowStep * T::kRowBytes;
            CHECK(full == fast, "copy shortcut");
            g.insert(((shift + full) / 16) % 8);
          }
          CHECK(g.size() == 8, "cp.async conflict op%d i%d t0 %d", op, i, t0); ++phases;
        }
      // every (row, chunk) of the tile is copied exactly once per K-tile
      std::set<std::pair<int, int>> cov;
      for (int t = 0; t < T::kThreads; ++t)
        for (int i = 0; i < copies; ++i) CHECK(cov.insert({copy_row(t, i), copy_chunk(t)}).second, "double copy");
      CHECK((int)cov.size() == (op ? T::kBN : T::kBM) * T::kChunks, "copy coverage");
    }
  }
  printf("bank check: %d phases (8 base shifts) checked\n", phases);
}

// ---- functional emulation ----
static uint16_t bf(float f) { uint32_t u; memcpy(&u, &f, 4); return (uint16_t)(u >> 16); }  // exact for small ints
static float fb(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }

struct Case { int M, N, K, splits, k_split; bool acc, bias, res; };

static void emulate(const Case& cs, std::mt19937& rng) {
  const int M = cs.M, N = cs.N, K = cs.K;
  const int lda = (K + 7) / 8 * 8 + 8, ldb = (K + 7) / 8 * 8;  // lda with extra padding
  std::uniform_int_distribution<int> d(-3, 3);
  std::vector<uint16_t> A((size_t)M * lda), B((size_t)N * ldb);
  for (int r = 0; r < M; ++r) for (int k = 0; k < lda; ++k) A[(size_t)r * lda + k] = bf(k < K ? (float)d(rng) : 1000.f);  // garbage past K
  for (int r = 0; r < N; ++r) for (int k = 0; k < ldb; ++k) B[(size_t)r * ldb + k] = bf(k < K ? (float)d(rng) : -1000.f);
  const int ldc = N + 3;
  std::vector<float> C((size_t)(M + 1) * ldc, 7.f), bias(N), res((size_t)M * ldc);
  for (auto& v : bias) v = (float)d(rng);
  for (auto& v : res) v = (float)d(rng);
  for (auto& v : C) v = (float)d(rng);
  std::vector<float> C0 = C;
  std::vector<float> partial((size_t)cs.splits * M * N, NAN);

  // launcher normalisation as in launch()
  int k_split = cs.splits == 1 ? std::max(K, 1) : cs.k_split;
  const int tiles_m = (M + T::kBM - 1) / T::kBM, tiles_n = (N + T::kBN - 1) / T::kBN;
  std::vector<int> written((size_t)M * N * cs.splits, 0);
  auto epi = [&](int split, int row, int col, float v0, float v1) {  // mirrors store_epilogue
    if (row >= M) return;
    for (int j = 0; j < 2; ++j) {
      int c = col + j; if (c >= N) return;
      float v = j ? v1 : v0;
      written[((size_t)split * M + row) * N + c]++;
      if (cs.splits > 1) { partial[((size_t)split * M + row) * N + c] = v; continue; }
      size_t at = (size_t)row * ldc + c;
      if (cs.acc) v += C[at];
      if (cs.bias) v += bias[c];
      if (cs.res) v += res[at];
      C[at] = v;
    }
  };
  std::vector<uint8_t> smem(T::kSmemBytes);
  for (int split = 0; split < cs.splits; ++split)
    for (int tm = 0; tm < tiles_m; ++tm)
      for (int tn = 0; tn < tiles_n; ++tn) {
        const int m0 = tm * T::kBM, n0 = tn * T::kBN;
        const int k_begin = split * k_split, k_end = std::min(K, k_begin + k_split);
        const int k_tiles = k_end > k_begin ? (k_end - k_begin + T::kBK - 1) / T::kBK : 0;
        memset(smem.data(), 0xAB, smem.size());  // poison
        std::vector<int> stage_tile(T::kStages, -1);
        std::deque<std::vector<std::pair<int,int>>> groups;  // per group: (stage, tile)
        int committed = 0;
        std::vector<std::pair<int,int>> open;
        auto load_stage = [&](int stage, int kt) {
          for (int tid = 0; tid < T::kThreads; ++tid) {
            const int cchunk = copy_chunk(tid);
            const int k = k_begin + kt * T::kBK + cchunk * 8;
            const int k_bytes = k < k_end ? std::min(16, 2 * (k_end - k)) : 0;
            for (int op = 0; op < 2; ++op) {
              const int copies = op ? T::kCopiesB : T::kCopiesA;
              for (int i = 0; i < copies; ++i) {
                const int row = (op ? n0 : m0) + copy_row(tid, i);
                const int bytes = row < (op ? N : M) ? k_bytes : 0;
                const int ld = op ? ldb : lda;
                const std::vector<uint16_t>& G = op ? B : A;
                const size_t src = bytes ? (size_t)row * ld + k : 0;
                CHECK(k % 8 == 0 || !bytes, "misaligned chunk");
                if (bytes) CHECK(k + bytes / 2 <= K && src + bytes / 2 <= G.size(), "read past K/array");
                uint8_t* dst = smem.data() + stage * T::kStageBytes + (op ? T::kStageBytesA : 0) +
                               swizzle(copy_row(tid, 0), cchunk) + i * T::kCopyRowStep * T::kRowBytes;
                memset(dst, 0, 16);
                memcpy(dst, &G[src], bytes);
              }
            }
          }
          open.push_back({stage, kt});
        };
        auto commit = [&]() { groups.push_back(open); open.clear(); ++committed; };
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
              uint32_t a_off[32], b_off[32];
              for (int l = 0; l < 32; ++l) {
                a_off[l] = swizzle(wm0 + a_lane_row(l), 2 * q + a_lane_chunk(l));
                b_off[l] = T::kStageBytesA + swizzle(wn0 + b_lane_row(l), 2 * q + b_lane_chunk(l));
              }
              // ldmatrix.x4: reg j of lane L = matrix j (rows from lanes 8j..8j+7), row L/4, elements 2(L%4), +1
              auto ldsm = [&](const uint32_t* off, int add, uint16_t (*out)[4][2]) {
                for (int L = 0; L < 32; ++L)
                  for (int j = 0; j < 4; ++j) {
                    const uint8_t* rowp = stage + off[8 * j + L / 4] + add;
                    memcpy(out[L][j], rowp + 4 * (L % 4), 4);
                  }
              };
              uint16_t af[T::kTilesM][32][4][2];
              for (int i = 0; i < T::kTilesM; ++i) ldsm(a_off, i * 16 * T::kRowBytes, af[i]);
              for (int jn = 0; jn < T::kTilesN; jn += 2) {
                uint16_t bfr[32][4][2];
                ldsm(b_off, jn * 8 * T::kRowBytes, bfr);
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
              epi(split, row, col, ACC(tid, i, jn, 0), ACC(tid, i, jn, 1));
              epi(split, row + 8, col, ACC(tid, i, jn, 2), ACC(tid, i, jn, 3));
            }
        }
      }
  // reference (integers: exact in fp32)
  for (auto w : written) CHECK(w == 1, "an output written %d times", w);
  double maxerr = 0;
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < N; ++c) {
      float got;
      if (cs.splits > 1) {
        got = 0; for (int s = 0; s < cs.splits; ++s) {
          float ps = 0; int kb = s * k_split, ke = std::min(K, kb + k_split);
          for (int k = kb; k < ke; ++k) ps += fb(A[(size_t)r * lda + k]) * fb(B[(size_t)c * ldb + k]);
          float pv = partial[((size_t)s * M + r) * N + c];
          CHECK(pv == ps, "partial s%d (%d,%d) %g vs %g", s, r, c, pv, ps);
          got += pv;
        }
        float want = 0; for (int k = 0; k < K; ++k) want += fb(A[(size_t)r * lda + k]) * fb(B[(size_t)c * ldb + k]);
        maxerr = std::max(maxerr, (double)fabs(got - want));
        continue;
      }
      float want = 0; for (int k = 0; k < K; ++k) want += fb(A[(size_t)r * lda + k]) * fb(B[(size_t)c * ldb + k]);
      size_t at = (size_t)r * ldc + c;
      if (cs.acc) want += C0[at];
      if (cs.bias) want += bias[c];
      if (cs.res) want += res[at];
      got = C[at];
      CHECK(got == want, "C(%d,%d) %g vs %g  case M%d N%d K%d", r, c, got, want, M, N, K);
      maxerr = std::max(maxerr, (double)fabs(got - want));
    }
  if (cs.splits == 1) {  // untouched: columns ≥ N and the extra row
    for (int r = 0; r <= M; ++r) for (int c = 0; c < ldc; ++c) if (r == M || c >= N) CHECK(C[(size_t)r * ldc + c] == C0[(size_t)r * ldc + c], "sentinel (%d,%d)", r, c);
  }
  printf("case M=%d N=%d K=%d splits=%d k_split=%d acc=%d bias=%d res=%d: max err %g\n", M, N, K, cs.splits, k_split, cs.acc, cs.bias, cs.res, maxerr);
}

int main() {
  check_banks();
  std::mt19937 rng(1234);
  const Case cases[] = {
      {1, 1, 1, 1, 0, false, false, false},   {5, 3, 0, 1, 0, true, true, true},     {17, 9, 7, 1, 0, false, true, false},
      {128, 128, 32, 1, 0, false, false, false}, {129, 130, 33, 1, 0, true, false, true}, {200, 136, 100, 1, 0, false, true, true},
      {64, 256, 161, 1, 0, true, true, true}, {130, 70, 200, 3, 96, false, false, false}, {33, 129, 257, 5, 64, true, true, true},
      {257, 40, 64, 2, 32, false, false, false},
  };
  for (const auto& c : cases) emulate(c, rng);
  printf(fails ? "FAILED (%d)\n" : "ALL PASS\n", fails);
  return fails != 0;
}
