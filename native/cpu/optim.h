// CPU optimizer passes over the trainable parameter segments (backend.h): squared gradient norm,
// scaling, AdamW (each segment at its own lr, segment_lr(s.lr, lr_scale)). Each pass is one parallel region over fixed-size pieces of the segments (not a
// region per tensor: ~200 tensors, many of them a few hundred floats), with the loops
// vectorized per CPU feature. The norm sums the same pieces in the same order for any thread
// count, so it is bitwise reproducible.
#pragma once
#include "core/backend.h"

namespace emae::cpu {

double grad_norm_squared(const float* grads, const ParamSegment* segments, int count);
void scale(float* data, const ParamSegment* segments, int count, float factor);
void adamw(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, const ParamSegment* segments,
           int count, const AdamWScalars& s);

}  // namespace emae::cpu
