#include "cpu/optim.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "core/elementwise.h"
#include "cpu/clones.h"

namespace emae::cpu {
namespace {

constexpr size_t kPiece = 16384;  // floats per unit of work (64 KiB of each array)

struct Piece {
  size_t offset, size;
  bool decay;
  double lr_scale;
};

// The segments cut into pieces of at most kPiece floats, in segment order, in the calling
// thread's list (it only grows: no allocation in a steady step).
const std::vector<Piece>& pieces_of(const ParamSegment* segments, int count) {
  thread_local std::vector<Piece> pieces;
  pieces.clear();
  for (int s = 0; s < count; ++s)
    for (size_t o = 0; o < segments[s].size; o += kPiece)
      pieces.push_back({segments[s].offset + o, std::min(kPiece, segments[s].size - o), segments[s].decay,
                        segments[s].lr_scale});
  return pieces;
}

EMAE_CPU_CLONES double sum_squares(const float* x, size_t n) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (size_t i = 0; i < n; ++i) acc += (double)x[i] * (double)x[i];
  return acc;
}

EMAE_CPU_CLONES void scale_piece(float* x, size_t n, float factor) {
#pragma omp simd
  for (size_t i = 0; i < n; ++i) x[i] *= factor;
}

EMAE_CPU_CLONES void adamw_piece(float* __restrict p, const float* __restrict g, float* __restrict m,
                                 float* __restrict v, size_t n, const AdamWScalars& s, bool decay, double lr_scale) {
  AdamWScalars k = s;  // a local copy: loads hoisted out of the vector loop
  k.lr = segment_lr(s.lr, lr_scale);
#pragma omp simd
  for (size_t i = 0; i < n; ++i) adamw_update(p[i], m[i], v[i], g[i], k, decay);
}

}  // namespace

double grad_norm_squared(const float* grads, const ParamSegment* segments, int count) {
  const std::vector<Piece>& pieces = pieces_of(segments, count);
  thread_local std::vector<double> partial_buf;
  partial_buf.assign(pieces.size(), 0.0);
  double* partial = partial_buf.data();  // (a thread_local named inside the region would be each thread's own)
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < pieces.size(); ++i) partial[i] = sum_squares(grads + pieces[i].offset, pieces[i].size);
  double total = 0;
  for (size_t i = 0; i < pieces.size(); ++i) total += partial[i];
  return total;
}

void scale(float* data, const ParamSegment* segments, int count, float factor) {
  const std::vector<Piece>& pieces = pieces_of(segments, count);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < pieces.size(); ++i) scale_piece(data + pieces[i].offset, pieces[i].size, factor);
}

void adamw(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, const ParamSegment* segments,
           int count, const AdamWScalars& s) {
  const std::vector<Piece>& pieces = pieces_of(segments, count);
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < pieces.size(); ++i) {
    const size_t o = pieces[i].offset;
    adamw_piece(params + o, grads + o, exp_avg + o, exp_avg_sq + o, pieces[i].size, s, pieces[i].decay,
                pieces[i].lr_scale);
  }
}

}  // namespace emae::cpu
