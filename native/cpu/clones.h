// EMAE_CPU_CLONES: hot loops compiled for AVX-512, AVX2 and baseline x86-64, picked at load time
// by CPU feature (not by CPU model, which "arch=" clones would test: on a Sapphire Rapids VM they
// silently picked the SSE clone).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EMAE_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define EMAE_CPU_CLONES
#endif
