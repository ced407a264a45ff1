// CPU emulation of gemm_bf16.cuh's fp32 → bf16 conversion kernels, for the GEMM emulators
// (gemm_sm80_emulate.cu, gemm_sm90_emulate.cu): the header's own block bodies (convert_block,
// convert_row_sums_block) run with a block's 32 × 8 threads as fibers (fiber_block.h) that meet at a
// barrier for every sync(), the warps in a shuffled order per barrier phase, so what a thread reads
// after a barrier is what the others wrote before it, as on the GPU. The grids are those of the
// launchers (convert_to_bf16, convert_to_bf16_with_row_sums); the chunk partials are added as
// common.cuh's reduce_chunks_kernel does (in chunk order).
// A barrier that some thread never reaches (a divergent sync) is reported (printed, false returned).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/dev/fiber_block.h"
#include "cuda/gemm_bf16.cuh"

namespace emae::dev {

namespace convert_emulation {

using emae::cuda::bf16;
using namespace emae::cuda::bf16_detail;

// the scheduler's states; the bodies use no warp collective
enum class Op { kRun, kSync, kDone };
inline const char* op_name(Op op) {
  switch (op) {
    case Op::kRun: return "run";
    case Op::kSync: return "__syncthreads";
    case Op::kDone: return "exit";
  }
  return "?";
}
struct Lane {};

class ConvBlock : public FiberBlock<Op, Lane, kConvTile * kConvRows> {
 private:
  void complete(int, Op op) override { throw EmulationError(std::string("unexpected collective ") + op_name(op)); }
};

// one scheduler (and its fiber stacks) for every grid
inline ConvBlock& conv_block() {
  static ConvBlock block;
  return block;
}

// thread (tx, ty) is fiber tid = 32·ty + tx: warp ty, as threadIdx.x + 32·threadIdx.y on the GPU
struct HostBlock {
  int bx, by, tx, ty;
  ConvBlock* block;
  int block_x() const { return bx; }
  int block_y() const { return by; }
  int thread_x() const { return tx; }
  int thread_y() const { return ty; }
  void sync() const { block->wait(ty * kConvTile + tx, Op::kSync); }
};

// body(tile, HostBlock) for every block of a gx × gy grid, the tile (the block's shared memory)
// NaN-poisoned per block; false when a barrier was not reached by every thread.
template <class Body>
bool run_grid(int gx, int gy, Body body) {
  static_assert(kConvTile == 32, "a row of threads is one warp");
  ConvBlock& block = conv_block();
  for (int by = 0; by < gy; ++by)
    for (int bx = 0; bx < gx; ++bx) {
      ConvTile tile;
      try {
        block.run_block(bx, by, reinterpret_cast<unsigned char*>(&tile), sizeof tile, sizeof tile, [&](int tid) {
          body(tile, HostBlock{bx, by, tid % kConvTile, tid / kConvTile, &block});
        });
      } catch (const EmulationError& e) {
        std::fprintf(stderr, "conversion kernel: %s\n", e.what());
        return false;
      }
    }
  return true;
}

// The element type the header's kernels see: float, or bf16 for bf16 bits (uint16_t) on the host.
template <class Src> struct device_type { using type = float; };
template <> struct device_type<uint16_t> { using type = bf16; };
template <class Src> using device_type_t = typename device_type<Src>::type;
inline const float* device_ptr(const float* p) { return p; }
inline const bf16* device_ptr(const uint16_t* p) { return reinterpret_cast<const bf16*>(p); }

}  // namespace convert_emulation

// convert_to_bf16 on the host: dst (rows, bf16_ld(cols)) ← the (rows, cols) view of src (Src:
// float, or bf16 given as its bits).
template <class Src>
inline bool emulate_convert_to_bf16(uint16_t* dst, const Src* src, int rows, int cols, long long ld_src,
                                    bool transposed) {
  using namespace convert_emulation;
  if (rows <= 0 || cols <= 0) return true;
  const int ld_dst = emae::cuda::bf16_ld(cols);
  const ConvArgs<device_type_t<Src>> a{reinterpret_cast<bf16*>(dst), ld_dst, device_ptr(src), ld_src, rows, cols};
  return run_grid(emae::cuda::ceil_div(rows, kConvTile), emae::cuda::ceil_div(ld_dst, kConvTile),
                  [&](ConvTile& tile, const HostBlock& b) { convert_block(tile, a, transposed, b); });
}

// convert_to_bf16_with_row_sums on the host (src stores the view (cols, rows)); row_sums (rows) +=.
template <class Src>
inline bool emulate_convert_with_row_sums(uint16_t* dst, float* row_sums, const Src* src, int rows, int cols,
                                          long long ld_src) {
  using namespace convert_emulation;
  if (rows <= 0 || cols <= 0) return true;
  const int ld_dst = emae::cuda::bf16_ld(cols);
  const int chunks = emae::cuda::ceil_div(cols, kSumChunk);
  std::vector<float> partial((size_t)chunks * rows, std::nanf(""));
  const ConvArgs<device_type_t<Src>> a{reinterpret_cast<bf16*>(dst), ld_dst, device_ptr(src), ld_src, rows, cols};
  const bool ok = run_grid(emae::cuda::ceil_div(rows, kConvTile), chunks, [&](ConvTile& tile, const HostBlock& b) {
    convert_row_sums_block(tile, a, partial.data(), b);
  });
  for (int r = 0; r < rows; ++r) {  // reduce_chunks_kernel: chunk order
    float acc = 0.f;
    for (int k = 0; k < chunks; ++k) acc += partial[(size_t)k * rows + r];
    row_sums[r] += acc;
  }
  return ok;
}

// What column_sum_accumulate(dst, src, rows_total, C, row_stride, …) adds to dst[c], in its order:
// 256-row chunks summed row by row from 0, then the chunks in order. The fused row sums must equal it.
inline float column_sum_reference(const float* src, int rows_total, long long row_stride, int c) {
  float total = 0.f;
  for (int r0 = 0; r0 < rows_total; r0 += emae::cuda::kColumnSumRowChunk) {
    float chunk = 0.f;
    for (int r = r0; r < rows_total && r < r0 + emae::cuda::kColumnSumRowChunk; ++r) chunk += src[r * row_stride + c];
    total += chunk;
  }
  return total;
}

}  // namespace emae::dev
