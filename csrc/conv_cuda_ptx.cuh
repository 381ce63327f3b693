// The instructions of the CUDA convolution kernels (conv_cuda_kernels.cuh) that a host cannot run as they
// are: tensor-core mma.sync, cp.async and its groups, the TF32 rounding, plus the element conversions.
// One inline function each, so the host emulator (csrc/emulate/conv_cuda_emulator.cpp) can replace this
// file with definitions of the same names that follow the PTX ISA's documented semantics.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace ak {
namespace conv_detail {

using conv_bf16 = __nv_bfloat16;
using conv_f16 = __half;

template <typename T>
__device__ __forceinline__ T conv_zero();
template <>
__device__ __forceinline__ float conv_zero<float>() { return 0.0f; }
template <>
__device__ __forceinline__ __half conv_zero<__half>() { return __ushort_as_half(0); }
template <>
__device__ __forceinline__ __nv_bfloat16 conv_zero<__nv_bfloat16>() { return __ushort_as_bfloat16(0); }

__device__ __forceinline__ float conv_to_float(float v) { return v; }
__device__ __forceinline__ float conv_to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float conv_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T conv_from_float(float v);
template <>
__device__ __forceinline__ float conv_from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half conv_from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 conv_from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// 16 bytes from global memory (read-only path), p 16-byte aligned.
template <typename T, int N>
__device__ __forceinline__ void conv_ld_global16(T (&v)[N], const T* p) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
  memcpy(v, &u, 16);
}

// Shared-memory accesses.  SITE (conv_cuda_kernels.cuh SmemSite) names the access for the emulator, which
// counts each site's bank conflicts; here it is unused.
template <int SITE, typename T>
__device__ __forceinline__ void conv_sts(T* p, T v) {
  *p = v;
}

template <int SITE, typename T>
__device__ __forceinline__ T conv_lds(const T* p) {
  return *p;
}

// 16 bytes into shared memory (p 16-byte aligned): one 128-bit store.
template <int SITE, typename T, int N>
__device__ __forceinline__ void conv_sts16(T* p, const T (&v)[N]) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  uint4 u;
  memcpy(&u, v, 16);
  *reinterpret_cast<uint4*>(p) = u;
}

// 16 bytes out of shared memory (p 16-byte aligned): one 128-bit load.
template <int SITE, typename T, int N>
__device__ __forceinline__ void conv_lds16(T (&v)[N], const T* p) {
  static_assert(N * sizeof(T) == 16, "one 16-byte vector");
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  memcpy(v, &u, 16);
}

// ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16, warp-collective: four 8x8 matrices of 16-bit elements,
// lane l giving the address of row l % 8 of matrix l / 8 (16 bytes, 16-byte aligned); register j of lane l
// receives matrix j's elements (row 2*(l%4), column l/4) in its low half and (row 2*(l%4)+1, column l/4) in
// its high half -- the transpose of the layout plain ldmatrix delivers.
template <int SITE, typename T>
__device__ __forceinline__ void conv_ldmatrix_x4_trans(uint32_t (&r)[4], const T* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a));
}

// One 32-bit word of shared memory (a 16-bit pair of a fragment register).
template <int SITE, typename T>
__device__ __forceinline__ uint32_t conv_lds32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

template <typename T>
struct alignas(2 * sizeof(T)) ConvPair {
  T v[2];
};

template <typename T>
__device__ __forceinline__ void conv_store_pair(T* p, const T (&v)[2]) {
  *reinterpret_cast<ConvPair<T>*>(p) = ConvPair<T>{{v[0], v[1]}};
}

// cp.async.cg: 16 bytes global -> shared, bytes beyond src_bytes (0..16) zero-filled (nothing is read when
// src_bytes is 0).
template <int SITE, typename T>
__device__ __forceinline__ void conv_ptx_cp_async16(T* smem_dst, const T* src, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}

__device__ __forceinline__ void conv_ptx_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void conv_ptx_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// d = a x b + d on the tensor cores, fp32 accumulators; fragment layouts: conv_cuda_kernels.cuh.  One
// definition per operand type, the PTX shape and types spelled once each.
#define AK_CONV_PTX_MMA(NAME, SHAPE_AND_TYPES)                                                               \
  __device__ __forceinline__ void NAME(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {      \
    asm volatile("mma.sync.aligned." SHAPE_AND_TYPES " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n" \
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                             \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));                         \
  }
AK_CONV_PTX_MMA(conv_ptx_mma_bf16, "m16n8k16.row.col.f32.bf16.bf16.f32")
AK_CONV_PTX_MMA(conv_ptx_mma_f16, "m16n8k16.row.col.f32.f16.f16.f32")
AK_CONV_PTX_MMA(conv_ptx_mma_tf32, "m16n8k8.row.col.f32.tf32.tf32.f32")
#undef AK_CONV_PTX_MMA

// fp32 -> tf32 rounded to nearest (ties away from zero); fed raw fp32 bits, the mma would ignore the low
// 13 mantissa bits (truncation).
__device__ __forceinline__ uint32_t conv_ptx_to_tf32(float v) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return r;
}

}  // namespace conv_detail
}  // namespace ak
