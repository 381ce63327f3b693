// Philox-4x32-10, the counter-based random number generator of Random123 (Salmon, Moraes, Dror and
// Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011). A bijection of a 128-bit counter
// under a 64-bit key: the same (counter, key) gives the same four words on every device and in every
// implementation, which is what lets the dropout kernels (dropout_math.h) regenerate a mask instead of
// storing it, and lets the Triton kernels draw bit-identical masks.
//
//   counter (c0, c1, c2, c3), key (k0, k1); M0 = 0xD2511F53, M1 = 0xCD9E8D57,
//   W0 = 0x9E3779B9, W1 = 0xBB67AE85 (Weyl increments of the key). One round:
//     hi0:lo0 = M0 * c0,  hi1:lo1 = M1 * c2            (32 x 32 -> 64-bit products)
//     (c0, c1, c2, c3) <- (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
//     (k0, k1)         <- (k0 + W0, k1 + W1)             (mod 2^32)
//   Ten rounds; the output is the final (c0, c1, c2, c3).
//
// Known answers (Random123's kat_vectors, checked by the tests):
//   counter (0, 0, 0, 0), key (0, 0) -> (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8).
#pragma once

#include <cstdint>

// The same definition as lrn_math.h's (an identical redefinition is allowed), for files that include
// this header alone.
#ifndef AK_HD
#if defined(__CUDACC__)
#define AK_HD __host__ __device__
#else
#define AK_HD
#endif
#endif

namespace ak {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// Four 32-bit words: a counter going in, the random words coming out.
struct Philox4x32 {
  uint32_t x0, x1, x2, x3;
};

// The high and low words of the 64-bit product a * b.
struct PhiloxProduct {
  uint32_t hi, lo;
};

AK_HD inline PhiloxProduct philox_mul(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return PhiloxProduct{__umulhi(a, b), a * b};
#else
  // One widening product (a vpmuludq lane when a loop over counters is vectorised).
  const uint64_t product = static_cast<uint64_t>(a) * b;
  return PhiloxProduct{static_cast<uint32_t>(product >> 32), static_cast<uint32_t>(product)};
#endif
}

AK_HD inline Philox4x32 philox_round(Philox4x32 c, uint32_t k0, uint32_t k1) {
  const PhiloxProduct p0 = philox_mul(kPhiloxM0, c.x0);
  const PhiloxProduct p1 = philox_mul(kPhiloxM1, c.x2);
  return Philox4x32{p1.hi ^ c.x1 ^ k0, p1.lo, p0.hi ^ c.x3 ^ k1, p0.lo};
}

AK_HD inline Philox4x32 philox4x32_10(Philox4x32 counter, uint32_t k0, uint32_t k1) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < kPhiloxRounds; ++round) {
    counter = philox_round(counter, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return counter;
}

}  // namespace ak
