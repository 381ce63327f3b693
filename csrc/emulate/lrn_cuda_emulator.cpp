// Host-side emulation of the CUDA LRN kernels (lrn_cuda_kernels.cuh), for machines without a GPU.
// Not part of the extension (setup.py does not compile it).
//
// Each CUDA block runs as blockDim real threads, __syncthreads is a std::barrier, and blocks run one
// after another on a fresh NaN-filled shared memory (reads of unwritten shared memory show up as NaN).
// The grid is capped (6 blocks, 3 with `quick`) so that the kernels' grid-stride tile loops run too.
// The kernels' own launch planning (plan_launch) picks kernel, block shape and shared-memory size, as
// on the GPU. Checks, against a double-precision reference of torch.nn.functional.local_response_norm:
// forward and backward values for fp32 / fp16 / bf16, both layouts, misaligned base pointers, n = 1 .. 66
// (tiled and fallback paths), the NCHW backward's v1 variant too (fp32), and that every thread of a block
// passed the same number of barriers.
// On the GPU the power is exp2f(e * log2f(b)) (fast math); here lrn_math.h's host polynomials.
//
// Build and run from the repository root (TORCH_INC = torch's include dir, e.g.
// python -c "import torch.utils.cpp_extension as c; print(c.include_paths()[0])"):
//   g++ -std=c++20 -O2 -Icsrc -I$TORCH_INC csrc/emulate/lrn_cuda_emulator.cpp -o /tmp/lrn_emu -lpthread
//   /tmp/lrn_emu quick      # ~100 cases, seconds;  /tmp/lrn_emu  # ~600 cases, about a minute
// Add -fsanitize=address (out-of-bounds global accesses; shared memory past the requested dynamic size
// is poisoned) or -fsanitize=thread (data races between the threads of a block, e.g. a missing
// __syncthreads). Exit status 0 when every case passes.
#include <barrier>
#include <thread>
#include <vector>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <algorithm>
#include <string>
#include <atomic>

#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define EMU_POISON(p, n) ((void)0)
#define EMU_UNPOISON(p, n) ((void)0)
#endif

// ---------------------------------------------------------------- CUDA shims
#include "emulated_cuda.h"
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{a, b, c, d}; }
inline uint4 __ldg(const uint4* p) { return *p; }
thread_local std::barrier<>* tl_barrier = nullptr;
thread_local int tl_syncs = 0;
inline void __syncthreads() { ++tl_syncs; tl_barrier->arrive_and_wait(); }

constexpr size_t kSmemCapacity = 256 * 1024;
namespace ak { namespace { alignas(16) unsigned char smem[kSmemCapacity]; } }

#include "lrn_cuda_kernels.cuh"

using namespace ak;

static std::atomic<long> g_barrier_mismatch{0};

template <typename Kernel, typename... Args>
void emulate(int64_t grid, int bx, int by, size_t smem_bytes, Kernel kernel, Args... args) {
  if (smem_bytes > kSmemCapacity) { printf("smem too big %zu\n", smem_bytes); exit(1); }
  gridDim = EmuDim3{static_cast<unsigned>(grid), 1, 1};
  blockDim = EmuDim3{static_cast<unsigned>(bx), static_cast<unsigned>(by), 1};
  const int nthreads = bx * by;
  for (int64_t b = 0; b < grid; ++b) {
    EMU_UNPOISON(smem, kSmemCapacity);
    std::memset(smem, 0xff, kSmemCapacity);  // NaN in every dtype: unwritten reads show up
    EMU_POISON(smem + smem_bytes, kSmemCapacity - smem_bytes);
    std::barrier<> bar(nthreads);
    std::vector<int> syncs(nthreads, -1);
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&, t] {
        threadIdx = EmuDim3{static_cast<unsigned>(t % bx), static_cast<unsigned>(t / bx), 1};
        blockIdx = EmuDim3{static_cast<unsigned>(b), 1, 1};
        tl_barrier = &bar;
        tl_syncs = 0;
        kernel(args...);
        syncs[t] = tl_syncs;
        bar.arrive_and_drop();
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 1; t < nthreads; ++t)
      if (syncs[t] != syncs[0]) { ++g_barrier_mismatch; break; }
  }
  EMU_UNPOISON(smem, kSmemCapacity);
}

// ---------------------------------------------------------------- reference (double)
struct Case {
  int64_t N; int C; int64_t S; int64_t size; bool cl; double alpha, beta, k; int offset;
};

static int64_t index_of(const Case& c, int64_t n, int ch, int64_t s) {
  return c.cl ? (n * c.S + s) * c.C + ch : (n * c.C + ch) * c.S + s;
}

static void reference(const Case& c, const std::vector<double>& x, const std::vector<double>& dy,
                      std::vector<double>& y, std::vector<double>& dx) {
  const int64_t pre = c.size / 2, post = (c.size - 1) / 2;
  const int64_t numel = c.N * c.C * c.S;
  y.assign(numel, 0); dx.assign(numel, 0);
  std::vector<double> base(c.C), t(c.C);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t s = 0; s < c.S; ++s) {
      for (int ch = 0; ch < c.C; ++ch) {
        double sum = 0;
        for (int64_t j = std::max<int64_t>(ch - pre, 0); j <= std::min<int64_t>(ch + post, c.C - 1); ++j) { double v = x[index_of(c, n, j, s)]; sum += v * v; }
        base[ch] = c.k + c.alpha / c.size * sum;
        const int64_t i = index_of(c, n, ch, s);
        y[i] = x[i] * std::pow(base[ch], -c.beta);
        t[ch] = dy[i] * x[i] * std::pow(base[ch], -c.beta - 1);
      }
      for (int ch = 0; ch < c.C; ++ch) {
        double ts = 0;
        for (int64_t j = std::max<int64_t>(ch - post, 0); j <= std::min<int64_t>(ch + pre, c.C - 1); ++j) ts += t[j];
        const int64_t i = index_of(c, n, ch, s);
        dx[i] = dy[i] * std::pow(base[ch], -c.beta) - 2 * c.alpha * c.beta / c.size * x[i] * ts;
      }
    }
}

static const char* kind_name(KernelKind k) {
  return k == KernelKind::kNchwTiles ? "nchw" : (k == KernelKind::kNhwcTiles ? "nhwc" : "fallback");
}

static int g_grid_cap = 24;

template <typename T>
bool run_case(const Case& c, double tol, bool verbose, double* worst, bool backward_v1 = false) {
  const int64_t numel = c.N * c.C * c.S;
  std::mt19937 rng(static_cast<unsigned>(numel * 31 + (c.size % 1000003) * 7 + c.offset + (c.cl ? 1000 : 0)));
  std::normal_distribution<float> nd;
  // Buffers with `offset` poisoned leading elements (misaligned base) and exact ends.
  std::vector<T> xb(numel + c.offset), dyb(numel + c.offset), yb(numel + c.offset), dxb(numel + c.offset);
  T* x = xb.data() + c.offset; T* dy = dyb.data() + c.offset; T* y = yb.data() + c.offset; T* dx = dxb.data() + c.offset;
  std::vector<double> xd(numel), dyd(numel);
  for (int64_t i = 0; i < numel; ++i) {
    x[i] = static_cast<T>(nd(rng)); dy[i] = static_cast<T>(nd(rng));
    xd[i] = static_cast<float>(x[i]); dyd[i] = static_cast<float>(dy[i]);
    y[i] = static_cast<T>(NAN); dx[i] = static_cast<T>(NAN);
  }
  if (c.offset) {
    EMU_POISON(xb.data(), c.offset * sizeof(T)); EMU_POISON(dyb.data(), c.offset * sizeof(T));
    EMU_POISON(yb.data(), c.offset * sizeof(T)); EMU_POISON(dxb.data(), c.offset * sizeof(T));
  }
  const LrnShape shape{c.N, c.C, c.S};
  LrnParams p = make_lrn_params(c.size, c.alpha, c.beta, c.k, c.C);
  p.backward_v1 = backward_v1;
  const bool rows_of_channels = c.cl || c.S == 1;
  const DeviceLimits dev{227 * 1024, 132};
  KernelKind kinds[2];
  for (int backward = 0; backward < 2; ++backward) {
    const LaunchPlan plan = plan_launch<T>(backward, shape, p, rows_of_channels, dev);
    kinds[backward] = plan.kind;
    const int64_t grid = std::min<int64_t>(plan.grid, g_grid_cap);
    switch (plan.kind) {
      case KernelKind::kNchwTiles:
        if (backward) emulate(grid, plan.block_x, plan.block_y, plan.smem_bytes, lrn_backward_nchw_kernel<T>, (const T*)x, (const T*)dy, dx, shape, p, plan.tiles);
        else emulate(grid, plan.block_x, plan.block_y, plan.smem_bytes, lrn_forward_nchw_kernel<T>, (const T*)x, y, shape, p, plan.tiles);
        break;
      case KernelKind::kNhwcTiles:
        if (backward) emulate(grid, plan.block_x, plan.block_y, plan.smem_bytes, lrn_backward_nhwc_kernel<T>, (const T*)x, (const T*)dy, dx, shape, p, plan.tile_positions, plan.tiles);
        else emulate(grid, plan.block_x, plan.block_y, plan.smem_bytes, lrn_forward_nhwc_kernel<T>, (const T*)x, y, shape, p, plan.tile_positions, plan.tiles);
        break;
      case KernelKind::kFallback:
        if (backward) emulate(grid, plan.block_x, plan.block_y, 0, lrn_backward_fallback_kernel<T>, (const T*)x, (const T*)dy, dx, plan.fallback, p);
        else emulate(grid, plan.block_x, plan.block_y, 0, lrn_forward_fallback_kernel<T>, (const T*)x, y, plan.fallback, p);
        break;
    }
  }
  if (c.offset) {
    EMU_UNPOISON(xb.data(), c.offset * sizeof(T)); EMU_UNPOISON(dyb.data(), c.offset * sizeof(T));
    EMU_UNPOISON(yb.data(), c.offset * sizeof(T)); EMU_UNPOISON(dxb.data(), c.offset * sizeof(T));
  }
  std::vector<double> yr, dxr;
  reference(c, xd, dyd, yr, dxr);
  double ymax = 0, dxmax = 0, ye = 0, dxe = 0;
  for (int64_t i = 0; i < numel; ++i) {
    ymax = std::max(ymax, std::fabs(yr[i])); dxmax = std::max(dxmax, std::fabs(dxr[i]));
    const double a = static_cast<float>(y[i]), b = static_cast<float>(dx[i]);
    ye = std::max(ye, std::isnan(a) ? INFINITY : std::fabs(a - yr[i]));
    dxe = std::max(dxe, std::isnan(b) ? INFINITY : std::fabs(b - dxr[i]));
  }
  ye /= std::max(ymax, 1e-30); dxe /= std::max(dxmax, 1e-30);
  worst[0] = std::max(worst[0], ye); worst[1] = std::max(worst[1], dxe);
  const bool ok = ye <= tol && dxe <= tol;
  if (!ok || verbose)
    printf("%s N=%lld C=%d S=%lld n=%lld %s off=%d [%s/%s%s]: fwd %.2e bwd %.2e\n", ok ? "ok  " : "FAIL", (long long)c.N, c.C,
           (long long)c.S, (long long)c.size, c.cl ? "NHWC" : "NCHW", c.offset, kind_name(kinds[0]), kind_name(kinds[1]),
           backward_v1 ? " v1" : "", ye, dxe);
  return ok;
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  g_grid_cap = quick ? 3 : 6;
  struct Shape { int64_t N; int C; int64_t S; };
  std::vector<Shape> shapes = {{2, 1, 7}, {3, 5, 11}, {2, 16, 65}, {1, 96, 130}, {1, 40, 3}, {4, 7, 1}, {2, 33, 64}, {1, 70, 129}};
  // 2^31 and 2^40: n beyond int, its reach clipped to the channels (make_lrn_params).
  std::vector<int64_t> sizes = {1, 2, 3, 4, 5, 6, 9, 16, 25, 64, 65, 66, int64_t(1) << 31, int64_t(1) << 40};
  if (quick) { shapes = {{2, 5, 11}, {1, 40, 70}, {3, 7, 1}, {1, 33, 65}}; sizes = {1, 4, 5, 66, int64_t(1) << 31}; }
  int cases = 0, fails = 0;
  double worst[3][2] = {};
  int idx = 0;
  for (const Shape& s : shapes)
    for (int64_t size : sizes)
      for (int cl = 0; cl < 2; ++cl)
        for (int dt = 0; dt < 3; ++dt) {
          ++idx;
          const double params[4][3] = {{1e-4, 0.75, 2.0}, {0.5, 0.75, 1.0}, {2.0, 1.7, 0.3}, {1.0, -0.4, 0.7}};
          Case c{s.N, s.C, s.S, size, cl == 1, params[idx % 4][0], params[idx % 4][1], params[idx % 4][2], (int[]){0, 1, 3, 5}[idx % 4]};
          bool ok;
          if (dt == 0) {
            // the NCHW backward's two variants (v2 register windows, the default; v1 kept for benchmarks)
            ok = run_case<float>(c, 2e-5, false, worst[0]);
            if (!c.cl) { ok = run_case<float>(c, 2e-5, false, worst[0], true) && ok; ++cases; }
          }
          else if (dt == 1) ok = run_case<c10::Half>(c, 2e-3, false, worst[1]);
          else ok = run_case<c10::BFloat16>(c, 1.6e-2, false, worst[2]);
          ++cases; fails += !ok;
        }
  // Paths not in the matrix: NHWC with C > 1024 (fallback), C = 1024 (tiled), NCHW S = 1.
  if (!quick) {
    double w[2] = {};
    for (Case c : {Case{2, 1500, 2, 5, true, 0.5, 0.75, 1.0, 1}, Case{1, 1024, 3, 7, true, 0.5, 0.75, 1.0, 3},
                   Case{1, 1100, 3, 5, false, 0.5, 0.75, 1.0, 2}, Case{5, 300, 1, 5, false, 0.5, 0.75, 1.0, 1},
                   Case{2, 96, 729, 5, false, 0.5, 0.75, 2.0, 1}}) {
      fails += !run_case<float>(c, 2e-5, true, w); ++cases;
      fails += !run_case<c10::Half>(c, 2e-3, true, w); ++cases;
    }
  }
  // The power (lrn_math.h): beta == 0.75 takes the square roots, any other beta exp2/log2. The kernels at
  // many beta -- 0.75, its fp32 neighbours, values that round to 0.75f -- with k small and alpha large, so
  // that the bases span several decades; then base^(-beta) itself over the float range.
  for (double beta : {0.75, 0.7499999, 0.75000001, 0.75000006, 0.5, 1.0, 2.0, 0.25, 1.5})
    for (int cl = 0; cl < 2; ++cl) {
      const Case c{2, 16, 65, 5, cl == 1, 1.0, beta, 0.01, 1};
      fails += !run_case<float>(c, 2e-5, false, worst[0]); ++cases;
      if (!c.cl) { fails += !run_case<float>(c, 2e-5, false, worst[0], true); ++cases; }
    }
  double power_worst[2] = {};  // [0]: beta = 0.75 over every positive float; [1]: others over 2^-60 .. 2^60
  for (float beta : {0.75f, 0.7499999f, 0.75000006f, 0.5f, 1.0f, 2.0f, 0.25f})
    for (int e = -149; e <= 127; ++e)
      for (float m : {1.0f, 1.1f, 1.4142135f, 1.7f, 1.9999999f}) {
        const float b = std::ldexp(m, e);
        if (!(b > 0.0f) || std::isinf(b)) continue;
        const bool sqrt_path = lrn_beta_is_three_quarters(beta);
        if (!sqrt_path && std::abs(e) > 60) continue;
        const double ref = std::pow(static_cast<double>(b), -static_cast<double>(beta));
        const double err = std::fabs(lrn_scale(b, beta) - ref) / ref;
        power_worst[sqrt_path ? 0 : 1] = std::max(power_worst[sqrt_path ? 0 : 1], std::isnan(err) ? INFINITY : err);
      }
  const bool specials_ok = lrn_scale(INFINITY, 0.75f) == 0.0f && std::isnan(lrn_scale(NAN, 0.75f));
  fails += !specials_ok;
  printf("worst power: three_quarters %.2e general %.2e specials %s\n", power_worst[0], power_worst[1],
         specials_ok ? "ok" : "FAIL");
  printf("cases %d fails %d barrier-count mismatches %ld\n", cases, fails, g_barrier_mismatch.load());
  const char* names[3] = {"float32", "float16", "bfloat16"};
  for (int d = 0; d < 3; ++d) printf("worst %s: fwd %.2e bwd %.2e\n", names[d], worst[d][0], worst[d][1]);
  return fails || g_barrier_mismatch ? 1 : 0;
}
