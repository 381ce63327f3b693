// What the host emulators (csrc/emulate/*_cuda_emulator.cpp) put in place of the CUDA language before they
// include a kernel header: the built-in index variables (threadIdx and blockIdx per host thread, blockDim and
// gridDim per launch), the uint4 vector type, and the function qualifiers, which mean nothing on the host.
// Each emulator adds the intrinsics its kernels use (__syncthreads, __ldg, ...). Defines variables: include
// it in one translation unit of a program.
#pragma once

struct EmuDim3 {
  unsigned x = 1, y = 1, z = 1;
};
thread_local EmuDim3 threadIdx, blockIdx;
EmuDim3 blockDim, gridDim;

struct uint4 {
  unsigned x, y, z, w;
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
