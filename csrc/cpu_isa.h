// The instruction sets the CPU kernels are compiled for, and which of them this CPU runs. Kept free of
// torch headers so that test harnesses (csrc/emulate/cpu_isa_harness.cpp) can name an ISA too.
//
// Every CPU kernel with per-ISA copies takes the ISA as an argument of an internal entry point; the public
// entry points pass best_cpu_isa() (a property of the CPU, never a setting), and the harness passes each
// ISA this CPU supports in turn, so that every copy is tested against float64 on a machine that has it.
#pragma once

namespace ak {

enum class CpuIsa : int {
  kBaseline = 0,  // x86-64 baseline (SSE2), or whatever the compiler targets elsewhere
  kAvx2 = 1,      // AVX2 + FMA, 256-bit vectors
  kAvx512 = 2,    // AVX-512 F/VL/BW/DQ, 512-bit vectors
};

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AK_CPU_ISA_CLONES 1
// GCC's defaults for AVX-512 code keep 256-bit vectors on some tunings: ask for 512-bit ones.
#define AK_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define AK_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,prefer-vector-width=512")))
#endif

// Whether this CPU (and its OS, which must save the wider registers: libgcc's check includes that) runs isa.
inline bool cpu_supports(CpuIsa isa) {
#ifdef AK_CPU_ISA_CLONES
  switch (isa) {
    case CpuIsa::kBaseline: return true;
    case CpuIsa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuIsa::kAvx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
  return false;
#else
  return isa == CpuIsa::kBaseline;
#endif
}

// The widest ISA this CPU runs (detected once).
inline CpuIsa best_cpu_isa() {
  static const CpuIsa best = cpu_supports(CpuIsa::kAvx512) ? CpuIsa::kAvx512
                             : cpu_supports(CpuIsa::kAvx2) ? CpuIsa::kAvx2
                                                           : CpuIsa::kBaseline;
  return best;
}

}  // namespace ak
