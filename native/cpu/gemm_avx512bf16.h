// Opt-in bf16 GEMM with AVX512-BF16 (VDPBF16PS) for CPUs without AMX (AMD Zen 4 and newer,
// Intel Cooper Lake): the same contract as the AMX path (gemm_amx.h) — operands rounded to bf16
// (to_bf16: nearest even, denormals to zero) when packed, products summed in fp32, C and
// everything around it fp32, bitwise independent of the thread count. Called by gemm() for
// GemmParams::bf16 when AMX cannot run.
#pragma once
#include <string>

#include "cpu/gemm.h"

namespace emae::cpu {

// Whether this CPU and OS run AVX512-BF16 (cpuid: AVX512F, AVX512BW, AVX512_BF16; XCR0: the
// zmm and opmask state enabled); when not, why.
bool avx512_bf16_available(std::string* why = nullptr);

// Throws std::runtime_error (with the reason) where avx512_bf16_available() is false.
void gemm_avx512_bf16(const GemmParams& p);

}  // namespace emae::cpu
