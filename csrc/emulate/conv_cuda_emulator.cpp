// Host emulation of the CUDA convolution kernels (conv_cuda_kernels.cuh), for machines without a GPU.
// Not part of the extension: tests/test_conv_cuda.py builds it with torch.utils.cpp_extension.load.
//
// What runs is the kernel's own device code: its tile plan (conv.h plan_conv), its arguments
// (make_conv_args), its choice of compiled kernel (dispatch_conv), and every thread of every block, as a
// real host thread; __syncthreads is a barrier of the block.  Blocks run one after another on a
// NaN-filled shared memory, so a read of shared memory nobody wrote shows up in the result.
// The instructions a host does not have are replaced by emulations of their documented (PTX ISA)
// semantics, not by shortcuts:
//   mma.sync.m16n8k16 (.bf16 / .f16) and mma.sync.m16n8k8 (.tf32): warp-collective.  Every lane deposits
//     its A, B and C fragment registers; the warp's A (16 x k), B (k x 8) and C (16 x 8) are rebuilt from
//     the deposits by the PTX ISA's "matrix fragments" tables (groupID = lane >> 2, threadID_in_group =
//     lane % 4), and each lane takes back its D elements by the same table.  A kernel that loads its
//     fragments in another layout gets a wrong product.  Products are exact (bf16/fp16/tf32 products fit
//     in fp32), sums are fp32 in k order; tf32 operands are their register's top 19 bits (the low 13
//     mantissa bits ignored, as the hardware does).
//   cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits.
//   ldmatrix.x4.trans (.b16): warp-collective; each lane's row address deposited, each lane's registers built
//     from the 8x8 matrices by the PTX ISA's ldmatrix layout, transposed.
//   cp.async.cg 16 (+ src-size zero fill), commit_group, wait_group N: a copy is only queued when issued and
//     happens at the latest moment the PTX rules allow -- when a wait_group leaves at most N newer groups
//     pending -- so reading a stage before waiting for it reads NaN or stale data.
// Checked on the way (abort with a message): 16-byte alignment of both cp.async addresses and of 16-byte
// vector loads, 4-byte alignment of 32-bit shared loads, shared addresses inside the launch's dynamic
// shared memory, global addresses of cp.async / vector loads inside the tensors, and that every thread of
// a block passes the same number of barriers.
#include <torch/extension.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "smem_banks.h"

// ---------------------------------------------------------------- CUDA shims
#include "emulated_cuda.h"

[[noreturn]] static void emu_fail(const char* what) {
  fprintf(stderr, "conv emulator: %s\n", what);
  fflush(stderr);
  std::abort();
}

namespace emu {

constexpr size_t kSmemCapacity = 256 * 1024;
size_t g_smem_bytes = 0;  // dynamic shared memory of the running launch

struct Range {
  const unsigned char* lo;
  const unsigned char* hi;
};
std::vector<Range> g_global;  // the tensors of the running launch

void check_global(const void* p, size_t bytes, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  for (const Range& r : g_global)
    if (c >= r.lo && c + bytes <= r.hi) return;
  emu_fail(what);
}

// Per-thread state: barriers of its block and warp, pending cp.async groups.
struct Copy {
  void* dst;
  const void* src;
  int bytes;
};
struct WarpExchange {
  std::barrier<>* bar;
  uint32_t a[32][4], b[32][2];
  float c[32][4];
  const unsigned char* rows[32];  // ldmatrix row addresses
};
thread_local std::barrier<>* tl_block_barrier = nullptr;
thread_local WarpExchange* tl_warp = nullptr;
thread_local int tl_syncs = 0;
thread_local std::deque<std::vector<Copy>> tl_groups;  // committed groups, oldest first
thread_local std::vector<Copy> tl_open;                // issued, not yet committed

void perform(const std::vector<Copy>& group) {
  for (const Copy& c : group) {
    std::memset(c.dst, 0, 16);
    if (c.bytes > 0) std::memcpy(c.dst, c.src, c.bytes);
  }
}

}  // namespace emu

inline void __syncthreads() {
  ++emu::tl_syncs;
  emu::tl_block_barrier->arrive_and_wait();
}

namespace ak {
namespace conv_detail {

alignas(16) unsigned char conv_smem[emu::kSmemCapacity];

using conv_bf16 = c10::BFloat16;
using conv_f16 = c10::Half;

inline void check_shared(const void* p, size_t bytes, size_t align, const char* what) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < conv_smem || c + bytes > conv_smem + emu::g_smem_bytes) emu_fail(what);
  if (reinterpret_cast<uintptr_t>(p) % align) emu_fail(what);
}

template <typename T>
inline T conv_zero() {
  return T(0.0f);
}
inline float conv_to_float(float v) { return v; }
inline float conv_to_float(c10::Half v) { return static_cast<float>(v); }
inline float conv_to_float(c10::BFloat16 v) { return static_cast<float>(v); }
template <typename T>
inline T conv_from_float(float v) {
  return T(v);  // c10's conversions round to nearest even, as __float2half_rn / __float2bfloat16_rn
}
template <typename T, int N>
inline void conv_ld_global16(T (&v)[N], const T* p) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  if (reinterpret_cast<uintptr_t>(p) & 15) emu_fail("misaligned 16-byte global load");
  emu::check_global(p, 16, "16-byte global load outside the tensors");
  std::memcpy(v, p, 16);
}
inline uint32_t smem_offset(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - conv_smem);
}
template <int SITE, typename T>
inline void conv_sts(T* p, T v) {
  check_shared(p, sizeof(T), sizeof(T), "shared store misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), sizeof(T));
  *p = v;
}
template <int SITE, typename T>
inline T conv_lds(const T* p) {
  check_shared(p, sizeof(T), sizeof(T), "shared load misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), sizeof(T));
  return *p;
}
template <int SITE, typename T, int N>
inline void conv_sts16(T* p, const T (&v)[N]) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  check_shared(p, 16, 16, "16-byte shared store misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), 16);
  std::memcpy(p, v, 16);
}
template <int SITE, typename T, int N>
inline void conv_lds16(T (&v)[N], const T* p) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  check_shared(p, 16, 16, "16-byte shared load misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), 16);
  std::memcpy(v, p, 16);
}
// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16: every lane deposits its row address; lane l takes, of matrix
// j (rows from lanes 8j..8j+7, 8 elements each), elements (row 2*(l%4), col l/4) low and (row 2*(l%4)+1,
// col l/4) high into r[j].
template <int SITE, typename T>
inline void conv_ldmatrix_x4_trans(uint32_t (&r)[4], const T* p) {
  static_assert(sizeof(T) == 2, "ldmatrix .b16");
  check_shared(p, 16, 16, "ldmatrix row address misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), 16, smem_banks::kLdmatrix, 4);
  emu::WarpExchange& ex = *emu::tl_warp;
  const int lane = static_cast<int>(threadIdx.x % 32);
  ex.rows[lane] = reinterpret_cast<const unsigned char*>(p);
  ex.bar->arrive_and_wait();
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    std::memcpy(&lo, ex.rows[8 * j + 2 * (lane % 4)] + 2 * (lane / 4), 2);
    std::memcpy(&hi, ex.rows[8 * j + 2 * (lane % 4) + 1] + 2 * (lane / 4), 2);
    r[j] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  ex.bar->arrive_and_wait();  // nobody deposits the next addresses before all have read these
}
template <int SITE, typename T>
inline uint32_t conv_lds32(const T* p) {
  check_shared(p, 4, 4, "32-bit shared load misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(p), 4);
  uint32_t r;
  std::memcpy(&r, p, 4);
  return r;
}
template <typename T>
inline void conv_store_pair(T* p, const T (&v)[2]) {
  if (reinterpret_cast<uintptr_t>(p) % (2 * sizeof(T))) emu_fail("misaligned pair store");
  emu::check_global(p, 2 * sizeof(T), "pair store outside the tensors");
  p[0] = v[0];
  p[1] = v[1];
}

template <int SITE, typename T>
inline void conv_ptx_cp_async16(T* smem_dst, const T* src, int src_bytes) {
  check_shared(smem_dst, 16, 16, "cp.async destination misaligned or outside the dynamic shared memory");
  smem_banks::record(SITE, smem_offset(smem_dst), 16);
  if (src_bytes < 0 || src_bytes > 16) emu_fail("cp.async src-size outside [0, 16]");
  if (src_bytes > 0) {
    if (reinterpret_cast<uintptr_t>(src) & 15) emu_fail("cp.async source not 16-byte aligned");
    emu::check_global(src, src_bytes, "cp.async source outside the tensors");
  }
  emu::tl_open.push_back({smem_dst, src, src_bytes});
}
inline void conv_ptx_cp_async_commit() {
  emu::tl_groups.push_back(std::move(emu::tl_open));
  emu::tl_open.clear();
}
template <int N>
inline void conv_ptx_cp_async_wait() {
  while (emu::tl_groups.size() > size_t(N)) {
    emu::perform(emu::tl_groups.front());
    emu::tl_groups.pop_front();
  }
}

inline float tf32_operand(uint32_t bits) {  // the hardware reads the top 19 bits of a .tf32 register
  bits &= 0xffffe000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint32_t conv_ptx_to_tf32(float v) {  // cvt.rna.tf32.f32
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (std::isnan(v)) return 0x7fffffffu;
  if (std::isinf(v)) return bits;
  bits += 0x1000u;  // half of the dropped 13 bits: ties round away from zero (sign-magnitude)
  return bits & 0xffffe000u;
}

inline float f16_operand(uint32_t reg, int half, bool bf16) {
  const uint16_t h = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);  // low half = lower element
  if (bf16) return static_cast<float>(c10::BFloat16(h, c10::BFloat16::from_bits()));
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
}

// kind: 0 = m16n8k16 .f16, 1 = m16n8k16 .bf16, 2 = m16n8k8 .tf32.
inline void emulate_mma(int kind, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emu::WarpExchange& ex = *emu::tl_warp;
  const int lane = static_cast<int>(threadIdx.x % 32);
  std::memcpy(ex.a[lane], a, sizeof(a));
  std::memcpy(ex.b[lane], b, sizeof(b));
  std::memcpy(ex.c[lane], d, sizeof(d));
  ex.bar->arrive_and_wait();
  const int K = kind == 2 ? 8 : 16;
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int group = l >> 2, tig = l % 4;  // groupID, threadID_in_group
    if (kind == 2) {
      // .tf32 A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);  B: b0 (t, g), b1 (t+4, g).
      for (int i = 0; i < 4; ++i) {
        const int row = (i == 0 || i == 2) ? group : group + 8;
        const int col = i < 2 ? tig : tig + 4;
        A[row][col] = tf32_operand(ex.a[l][i]);
      }
      for (int i = 0; i < 2; ++i) B[i == 0 ? tig : tig + 4][group] = tf32_operand(ex.b[l][i]);
    } else {
      // .f16 / .bf16 A elements a0..a7 (two per register, low half first):
      //   row = g for i in {0,1,4,5}, g+8 otherwise; col = 2t + (i & 1) (+8 for i >= 4).
      for (int i = 0; i < 8; ++i) {
        const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
        const int col = tig * 2 + (i & 1) + (i >= 4 ? 8 : 0);
        A[row][col] = f16_operand(ex.a[l][i / 2], i % 2, kind == 1);
      }
      // B elements b0..b3: row = 2t + (i & 1) (+8 for i >= 2), col = g.
      for (int i = 0; i < 4; ++i) {
        const int row = tig * 2 + (i & 1) + (i >= 2 ? 8 : 0);
        B[row][group] = f16_operand(ex.b[l][i / 2], i % 2, kind == 1);
      }
    }
    // C / D: c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1).
    for (int i = 0; i < 4; ++i) C[i < 2 ? group : group + 8][tig * 2 + (i & 1)] = ex.c[l][i];
  }
  const int group = lane >> 2, tig = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = i < 2 ? group : group + 8, col = tig * 2 + (i & 1);
    float s = C[row][col];
    for (int k = 0; k < K; ++k) s += A[row][k] * B[k][col];
    d[i] = s;
  }
  ex.bar->arrive_and_wait();  // nobody deposits the next mma's registers before all have read these
}

inline void conv_ptx_mma_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emulate_mma(0, d, a, b);
}
inline void conv_ptx_mma_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emulate_mma(1, d, a, b);
}
inline void conv_ptx_mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emulate_mma(2, d, a, b);
}

}  // namespace conv_detail
}  // namespace ak

#define AK_CONV_HOST_EMULATION 1
#include "conv_cuda_kernels.cuh"

namespace {

using namespace ak;
using namespace ak::conv_detail;

std::atomic<long> g_barrier_mismatch{0};
std::atomic<long> g_unfinished_copies{0};
std::map<int, smem_banks::SiteStats> g_smem_stats;  // bank conflicts of the running plan, per SmemSite

// Every block of a (grid_x, grid_y) launch in turn, its nthreads threads as host threads running kernel().
template <typename Kernel>
void emulate_launch(int64_t grid_x, int64_t grid_y, int nthreads, size_t smem, Kernel kernel) {
  if (smem > emu::kSmemCapacity) emu_fail("dynamic shared memory larger than the emulator's");
  emu::g_smem_bytes = smem;
  gridDim = EmuDim3{static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y), 1};
  blockDim = EmuDim3{static_cast<unsigned>(nthreads), 1, 1};
  for (int64_t by = 0; by < grid_y; ++by)
    for (int64_t bx = 0; bx < grid_x; ++bx) {
      std::memset(conv_smem, 0xff, emu::kSmemCapacity);  // NaN in every dtype
      std::barrier<> block_bar(nthreads);
      std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
      std::vector<emu::WarpExchange> warps(nthreads / 32);
      for (int wi = 0; wi < nthreads / 32; ++wi) {
        warp_bars.emplace_back(new std::barrier<>(32));
        warps[wi].bar = warp_bars.back().get();
      }
      smem_banks::begin_block(nthreads);
      std::vector<int> syncs(nthreads, -1);
      std::vector<std::thread> threads;
      threads.reserve(nthreads);
      for (int t = 0; t < nthreads; ++t) {
        threads.emplace_back([&, t] {
          threadIdx = EmuDim3{static_cast<unsigned>(t), 0, 0};
          blockIdx = EmuDim3{static_cast<unsigned>(bx), static_cast<unsigned>(by), 0};
          emu::tl_block_barrier = &block_bar;
          emu::tl_warp = &warps[t / 32];
          emu::tl_syncs = 0;
          smem_banks::begin_thread(t);
          emu::tl_groups.clear();
          emu::tl_open.clear();
          kernel();
          if (!emu::tl_groups.empty() || !emu::tl_open.empty()) ++g_unfinished_copies;
          syncs[t] = emu::tl_syncs;
          block_bar.arrive_and_drop();
        });
      }
      for (auto& th : threads) th.join();
      smem_banks::end_block(g_smem_stats);
      for (int t = 1; t < nthreads; ++t)
        if (syncs[t] != syncs[0]) {
          ++g_barrier_mismatch;
          break;
        }
    }
}

template <typename TileT>
std::string tile_name(int math, const char* loader) {
  return "tile " + std::to_string(TileT::BM) + "x" + std::to_string(TileT::BN) + "x" + std::to_string(TileT::BK) +
         " math " + std::to_string(math) + " loader " + loader;
}

// Runs the kernel dispatch_conv picks for one of the three problems (Args: its kernel arguments) over
// conv_grid as the GPU would (blockIdx.z looping over the forward's and dgrad's groups, the wgrad's splits);
// kernel_name records which ran.
template <typename Args>
struct EmuLauncher {
  const Args& a;
  ConvDtype dtype;
  std::string kernel_name;

  template <typename TileT>
  int launch(void (*kernel)(Args), ConvKernel kind, int math, const std::string& variant) {
    const ConvTileShape shape = tile_shape<TileT>();
    kernel_name = tile_name<TileT>(math, variant.c_str());
    const ConvGridSize g = conv_grid<TileT>(a);
    for (int64_t z = 0; z < g.z; ++z) {
      const Args args = a;
      const unsigned zz = static_cast<unsigned>(z);
      emulate_launch(g.x, g.y, TileT::kThreads, conv_smem_bytes(shape, dtype, kind), [&, zz] {
        blockIdx.z = zz;
        kernel(args);
      });
    }
    return 0;
  }

  template <typename T, MathKind MK, typename TileT, ConvLoader L>
  int run() { return launch<TileT>(conv2d_relu_fwd_kernel<T, MK, TileT, L>, ConvKernel::kForward, int(MK), std::to_string(int(L))); }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_dgrad() {
    return launch<TileT>(conv2d_relu_dgrad_kernel<T, MK, TileT, VEC>, ConvKernel::kDgrad, int(MK), VEC ? "dgrad-vec16" : "dgrad-element");
  }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_wgrad() {
    return launch<TileT>(conv2d_relu_wgrad_kernel<T, MK, TileT, VEC>, ConvKernel::kWgrad, int(MK), VEC ? "wgrad-vec16" : "wgrad-element");
  }
};

// {site name: (warp instructions, wavefronts, ideal wavefronts, worst wavefronts of one phase)} of the plan run.
py::dict smem_site_dict() {
  py::dict d;
  for (const auto& [site, s] : g_smem_stats)
    d[kSmemSiteNames[site]] = py::make_tuple(s.instructions, s.wavefronts, s.ideal, s.worst_ways);
  return d;
}

// Runs the kernel dispatch_conv picks for `plan` (nothing when `empty`), checks every block's threads passed the
// same barriers and left no copy pending, and returns the plan's common fields and the kernel that ran.
template <typename Args, typename Plan>
py::dict run_plan(const Args& a, const Plan& plan, ConvDtype dtype, bool empty) {
  g_barrier_mismatch = 0;
  g_unfinished_copies = 0;
  g_smem_stats.clear();
  EmuLauncher<Args> launcher{a, dtype, {}};
  if (!empty) dispatch_conv<conv_f16, conv_bf16>(plan, dtype, launcher);
  TORCH_CHECK(g_barrier_mismatch == 0, "conv emulator: threads of a block passed different numbers of barriers");
  TORCH_CHECK(g_unfinished_copies == 0, "conv emulator: cp.async copies left pending at kernel exit");
  py::dict out;
  out["tile"] = plan.tile;
  out["fma"] = plan.fma;
  out["reason"] = std::string(plan.reason ? plan.reason : "");
  out["kernel"] = launcher.kernel_name;
  out["smem"] = smem_site_dict();
  return out;
}

ConvDtype dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ConvDtype::kFloat32;
    case at::kHalf: return ConvDtype::kFloat16;
    case at::kBFloat16: return ConvDtype::kBFloat16;
    default: TORCH_CHECK(false, "conv emulator: float32, float16 or bfloat16 only");
  }
}

unsigned align16(const void* p) { return static_cast<unsigned>(reinterpret_cast<uintptr_t>(p) & 15); }

void add_range(const at::Tensor& t) {
  if (!t.defined() || t.numel() == 0) return;
  const auto* p = static_cast<const unsigned char*>(t.data_ptr());
  // Extent of the elements the strides reach (all strides >= 0 here).
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  emu::g_global.push_back({p, p + (last + 1) * t.element_size()});
}

// x: channels_last (N, C, H, W); w: (Cout, Cg, KH, KW) with strides (row, 1, KW*Cg, Cg); y: any strides.
// tile / loader >= 0 override the plan (for coverage of every compiled kernel); returns the plan used.
py::dict conv2d_relu_forward(at::Tensor x, at::Tensor w, c10::optional<at::Tensor> bias, at::Tensor y,
                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t groups,
                             bool allow_tf32, int64_t tile, int64_t loader, int64_t sm_count) {
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels_last");
  const int64_t Cg = w.size(1), KH = w.size(2), KW = w.size(3);
  TORCH_CHECK(w.stride(1) == 1 && w.stride(3) == Cg && w.stride(2) == KW * Cg, "w must be channels_last rows");
  ConvProblem p{};
  p.N = x.size(0); p.C = x.size(1); p.H = x.size(2); p.W = x.size(3);
  p.Cout = w.size(0); p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  p.OH = y.size(2); p.OW = y.size(3);
  p.w_row_stride = w.stride(0);
  p.y_sn = y.stride(0); p.y_sc = y.stride(1); p.y_sh = y.stride(2); p.y_sw = y.stride(3);
  if (const char* why = conv_problem_error(p)) TORCH_CHECK(false, "conv emulator: ", why);
  const ConvDtype dtype = dtype_of(x);
  const void* bptr = bias.has_value() ? bias->data_ptr() : nullptr;
  ConvPlan plan = plan_conv(p, dtype, allow_tf32, int(sm_count), align16(x.data_ptr()), align16(w.data_ptr()),
                            align16(y.data_ptr()));
  if (loader >= 0) plan.loader = static_cast<ConvLoader>(loader);
  if (tile >= 0) plan.tile = int(tile);
  if (plan.fma || plan.loader == ConvLoader::kScalar) plan.tile = 2;  // the kernels compiled for them
  emu::g_global.clear();
  add_range(x); add_range(w); add_range(y);
  if (bias.has_value()) add_range(*bias);
  const ConvArgs a = make_conv_args(p, plan, x.data_ptr(), w.data_ptr(), bptr, y.data_ptr());
  py::dict out = run_plan(a, plan, dtype, p.N == 0);
  out["loader"] = int(plan.loader);
  out["w_vec"] = plan.w_vec;
  out["y_pair"] = plan.y_pair;
  return out;
}

// A backward launch's geometry: input (x or dx) (N, C, H, W); dy (N, Cout, OH, OW), its strides those the kernels
// read dy and y with; geometry (KH, KW, SH, SW, PH, PW, groups).
ConvProblem backward_problem(const at::Tensor& input, const at::Tensor& dy, const std::vector<int64_t>& geometry) {
  TORCH_CHECK(geometry.size() == 7, "geometry is (KH, KW, SH, SW, PH, PW, groups)");
  ConvProblem p{};
  p.N = input.size(0); p.C = input.size(1); p.H = input.size(2); p.W = input.size(3);
  p.Cout = dy.size(1); p.KH = geometry[0]; p.KW = geometry[1];
  p.SH = geometry[2]; p.SW = geometry[3]; p.PH = geometry[4]; p.PW = geometry[5]; p.groups = geometry[6];
  p.OH = dy.size(2); p.OW = dy.size(3);
  p.y_sn = dy.stride(0); p.y_sc = dy.stride(1); p.y_sh = dy.stride(2); p.y_sw = dy.stride(3);
  return p;
}

// dy, y: channels_last (N, Cout, OH, OW); wt: the transposed weight, 2-D (groups*Cg, row >= KH*KW*Og); dx any
// strides; geometry (KH, KW, SH, SW, PH, PW, groups).  tile >= 0 / vec >= 0 override the plan.
py::dict conv2d_relu_dgrad(at::Tensor dy, at::Tensor y, at::Tensor wt, at::Tensor dx, std::vector<int64_t> geometry,
                           bool allow_tf32, int64_t tile, int64_t vec, int64_t sm_count) {
  TORCH_CHECK(wt.dim() == 2 && wt.stride(1) == 1, "wt must be 2-D with contiguous rows");
  ConvDgradProblem d{};
  ConvProblem& p = d.p;
  p = backward_problem(dx, dy, geometry);
  p.w_row_stride = wt.stride(0);
  TORCH_CHECK(y.strides() == dy.strides(), "y and dy must share strides");
  d.dx_sn = dx.stride(0); d.dx_sc = dx.stride(1); d.dx_sh = dx.stride(2); d.dx_sw = dx.stride(3);
  if (const char* why = conv_dgrad_problem_error(d)) TORCH_CHECK(false, "conv emulator: ", why);
  const ConvDtype dtype = dtype_of(dy);
  ConvDgradPlan plan = plan_conv_dgrad(d, dtype, allow_tf32, int(sm_count), align16(dy.data_ptr()),
                                       align16(y.data_ptr()), align16(wt.data_ptr()), align16(dx.data_ptr()));
  if (vec >= 0) plan.vec = vec != 0;
  if (tile >= 0) plan.tile = int(tile);
  if (plan.fma || !plan.vec) plan.tile = 2;
  emu::g_global.clear();
  add_range(dy); add_range(y); add_range(wt); add_range(dx);
  const DgradArgs a = make_dgrad_args(d, plan, dy.data_ptr(), y.data_ptr(), wt.data_ptr(), dx.data_ptr());
  py::dict out = run_plan(a, plan, dtype, p.N == 0);
  out["vec"] = plan.vec;
  out["w_vec"] = plan.w_vec;
  out["dx_pair"] = plan.dx_pair;
  return out;
}

// dy, y: channels_last (N, Cout, OH, OW); x channels_last (N, C, H, W); dw_part (splits, Cout, K) and db_part
// (splits, Cout) fp32; geometry (KH, KW, SH, SW, PH, PW, groups).  vec >= 0 overrides the plan.
py::dict conv2d_relu_wgrad(at::Tensor dy, at::Tensor y, at::Tensor x, at::Tensor dw_part, at::Tensor db_part,
                           std::vector<int64_t> geometry, bool allow_tf32, int64_t tile, int64_t vec) {
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be channels_last");
  TORCH_CHECK(y.strides() == dy.strides(), "y and dy must share strides");
  ConvWgradProblem w{};
  ConvProblem& p = w.p;
  p = backward_problem(x, dy, geometry);
  w.splits = dw_part.size(0);
  if (const char* why = conv_wgrad_problem_error(w)) TORCH_CHECK(false, "conv emulator: ", why);
  const ConvDtype dtype = dtype_of(dy);
  ConvWgradPlan plan = plan_conv_wgrad(w, dtype, allow_tf32, align16(dy.data_ptr()), align16(y.data_ptr()),
                                       align16(x.data_ptr()));
  if (vec >= 0) plan.vec = vec != 0;
  if (tile >= 0) plan.tile = int(tile);
  if (plan.fma || !plan.vec) plan.tile = 2;
  emu::g_global.clear();
  add_range(dy); add_range(y); add_range(x); add_range(dw_part); add_range(db_part);
  const WgradArgs a = make_wgrad_args(w, plan, dy.data_ptr(), y.data_ptr(), x.data_ptr(), dw_part.data_ptr<float>(),
                                      db_part.data_ptr<float>());
  py::dict out = run_plan(a, plan, dtype, false);
  out["vec"] = plan.vec;
  out["p_per_split"] = a.p_per_split;
  return out;
}

// The bank model alone: wavefronts and ideal wavefronts of one warp instruction whose lane i accesses
// `bytes` bytes at offsets[i] (an offset < 0: the lane is inactive); ldmatrix_matrices > 0: an ldmatrix of
// that many 8x8 matrices (lane i supplies a row address of matrix i / 8).
py::tuple bank_wavefronts(std::vector<int64_t> offsets, int64_t bytes, int64_t ldmatrix_matrices) {
  TORCH_CHECK(offsets.size() == 32, "one offset per lane");
  std::vector<smem_banks::Access> acc(32);
  std::array<const smem_banks::Access*, 32> lanes{};
  for (int l = 0; l < 32; ++l) {
    if (offsets[l] < 0) continue;
    acc[l] = {0, 0, static_cast<uint32_t>(offsets[l]), int(bytes),
              ldmatrix_matrices > 0 ? smem_banks::kLdmatrix : smem_banks::kPlain, int(ldmatrix_matrices)};
    lanes[l] = &acc[l];
  }
  int worst = 0;
  const auto [wavefronts, ideal] = smem_banks::instruction_wavefronts(lanes, &worst);
  return py::make_tuple(wavefronts, ideal);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv2d_relu_wgrad", &conv2d_relu_wgrad);
  m.def("conv2d_relu_forward", &conv2d_relu_forward);
  m.def("conv2d_relu_dgrad", &conv2d_relu_dgrad);
  m.def("bank_wavefronts", &bank_wavefronts);
}
