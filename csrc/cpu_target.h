// Compiler helpers of the CPU kernels (lrn_cpu.cpp, pool_cpu.cpp): forced inlining of the small loops, and
// a second copy of the hot element loops compiled for AVX2 + FMA, chosen at run time where the CPU has it.
#pragma once

#if defined(__GNUC__)
#define AK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AK_ALWAYS_INLINE inline
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AK_CPU_AVX2_CLONE 1
#define AK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif
