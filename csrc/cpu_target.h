// Compiler and threading helpers of the CPU kernels (lrn_cpu.cpp, pool_cpu.cpp, dropout_cpu.cpp): forced
// inlining of the small loops, and parallel loops whose body is compiled per ISA (cpu_isa.h) -- baseline
// x86-64, AVX2 + FMA, AVX-512 -- with the widest copy the CPU runs chosen at run time.
#pragma once

#include <torch/csrc/stable/ops.h>  // torch::stable::parallel_for: torch's intra-op thread pool, stable C ABI

#include "cpu_isa.h"
#include "tensor_view.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__GNUC__)
#define AK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AK_ALWAYS_INLINE inline
#endif

// The CPU kernels' dtypes: float / half / bfloat16 computed in float, double (for gradcheck) in double.
#define AK_CPU_DISPATCH(TYPE, NAME, ...) AK_DISPATCH_FLOATING_AND_DOUBLE(TYPE, NAME, __VA_ARGS__)

namespace ak {

// at::parallel_for through the stable ABI (same pool, same grain semantics).
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  torch::stable::parallel_for(begin, end, grain, f);
}

inline int num_threads() { return static_cast<int>(torch::stable::get_num_threads()); }

// Scratch of the calling thread, 64-byte aligned, reused by every later call on this thread (torch's pool
// threads live as long as the process), so the kernels allocate nothing per call beyond their outputs once
// a thread has seen its largest problem. Two blocks per thread, told apart by kBlock:
// - Scratch (block 0): a parallel chunk's own scratch; a chunk takes all of it from one Scratch and never
//   holds two at once;
// - CallerScratch (block 1): what an op's calling thread holds across a parallel region and shares with the
//   workers (partial sums, per-column tables). The caller runs chunks too, so this must not be block 0.
template <int kBlock>
class ThreadScratch {
 public:
  // Bytes that take<E>(count) uses.
  template <typename E>
  static int64_t bytes(int64_t count) {
    return (std::max<int64_t>(count, 0) * static_cast<int64_t>(sizeof(E)) + 63) / 64 * 64;
  }

  explicit ThreadScratch(int64_t total_bytes) : at_(thread_block(total_bytes)) {}

  // The next count elements of type E (within the total_bytes given).
  template <typename E>
  E* take(int64_t count) {
    E* p = reinterpret_cast<E*>(at_);
    at_ += bytes<E>(count);
    return p;
  }

 private:
  static unsigned char* thread_block(int64_t total_bytes) {
    thread_local std::vector<std::max_align_t> buffer;
    const size_t words = (static_cast<size_t>(total_bytes) + 64 + sizeof(std::max_align_t) - 1) /
                         sizeof(std::max_align_t);
    if (buffer.size() < words) buffer.resize(words);
    const uintptr_t at = reinterpret_cast<uintptr_t>(buffer.data());
    return reinterpret_cast<unsigned char*>((at + 63) & ~uintptr_t(63));
  }

  unsigned char* at_;
};

using Scratch = ThreadScratch<0>;
using CallerScratch = ThreadScratch<1>;

// Work items per parallel chunk: about this many element visits at least.
constexpr int64_t kGrainElements = 1 << 15;

#ifdef AK_CPU_ISA_CLONES
template <typename Items>
AK_TARGET_AVX2 void run_items_avx2(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}

template <typename Items>
AK_TARGET_AVX512 void run_items_avx512(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}
#endif

template <typename Items>
void run_items_baseline(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}

// items(begin, end) compiled for isa (one the CPU supports).
template <typename Items>
void run_items(CpuIsa isa, const Items& items, int64_t begin, int64_t end) {
#ifdef AK_CPU_ISA_CLONES
  switch (isa) {
    case CpuIsa::kAvx512: run_items_avx512(items, begin, end); return;
    case CpuIsa::kAvx2: run_items_avx2(items, begin, end); return;
    case CpuIsa::kBaseline: break;
  }
#endif
  run_items_baseline(items, begin, end);
}

// items(begin, end) over [0, count) in parallel chunks of about kGrainElements element visits, compiled for
// isa (default: the widest this CPU runs).
template <typename Items>
void parallel_items(int64_t count, int64_t elements_per_item, const Items& items, CpuIsa isa = best_cpu_isa()) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
  parallel_for(0, count, grain, [&](int64_t begin, int64_t end) { run_items(isa, items, begin, end); });
}

}  // namespace ak
