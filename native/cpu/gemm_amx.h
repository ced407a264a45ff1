// Opt-in bf16 GEMM on Intel AMX tiles (Sapphire Rapids and newer): the operands are rounded to
// bf16 (round to nearest even) when packed, products accumulate in fp32, C and everything
// around it stay fp32. Called by gemm() for GemmParams::bf16; same contract otherwise.
#pragma once
#include <cstring>
#include <string>

#include "cpu/gemm.h"

namespace emae::cpu {

// Whether the AMX path can run in this process; when not, why (CPU, kernel or build).
// The first call asks Linux for the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM).
bool amx_bf16_available(std::string* why = nullptr);

// Throws std::runtime_error (with the reason) where amx_bf16_available() is false.
void gemm_amx_bf16(const GemmParams& p);

// float → bf16 bits as the AMX path rounds: nearest even, NaN kept quiet, denormals to zero.
inline unsigned short to_bf16(float x) {
  unsigned int u;
  std::memcpy(&u, &x, sizeof(u));
  if ((u & 0x7f800000u) == 0) return (unsigned short)((u >> 16) & 0x8000u);       // ±0, denormal → ±0
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN, quiet
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

}  // namespace emae::cpu
