// Host emulation of the CUDA kernels in dropout_cuda.cu. Each of their threads calls one function of
// dropout_math.h (dropout_group, bias_relu_dropout_group, bias_relu_dropout_backward_lane) with no
// communication between threads, except the backward's shared-memory tree, which is replayed here step by
// step. Calling the same functions for every thread in turn, with the launchers' choice of the packed
// (Pack4) paths, runs the device code's index arithmetic, mask and math on the CPU (the GPU build keeps
// subnormals too: -ftz=false in setup.py). Built with torch.utils.cpp_extension.load.
//
//   apply_dropout(src, dst, seed, threshold, scale)
//   bias_relu_dropout_forward(x, bias, y, seed, threshold, scale)
//   bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale)
// Same arguments as alexnet_kernels._C's dropout functions (contiguous CPU tensors, float / half /
// bfloat16), unchecked. And the pieces of the mask, for known-answer tests:
//   philox(counter[4], key[2]) -> words[4];  group_randoms(group, seed) -> words[4]
//   run_keep_bits(first, count, seed, threshold) -> keep bits of elements [first, first + count)
#include <torch/extension.h>

#include <vector>

#include "dropout_math.h"

namespace {

using namespace ak;

// dropout_cuda.cu's block of the backward: kBlockQuads column quads x kDbiasLanes row lanes.
constexpr int kBlockQuads = 256 / kDbiasLanes;
constexpr int kBlockColumns = kBlockQuads * kDropoutGroup;

#define EMULATOR_DISPATCH(TYPE, NAME, ...)                               \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                         \
                     AT_DISPATCH_CASE(at::ScalarType::Float, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::ScalarType::Half, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::ScalarType::BFloat16, __VA_ARGS__))

void apply_dropout(at::Tensor src, at::Tensor dst, int64_t seed, int64_t threshold, double scale) {
  const DropoutParams<float> p = make_dropout_params<float>(seed, threshold, scale);
  const int64_t numel = src.numel();
  EMULATOR_DISPATCH(src.scalar_type(), "apply_dropout", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* d = dst.data_ptr<scalar_t>();
    const bool aligned = is_pack4_aligned(s) && is_pack4_aligned(d);
    for (int64_t g = 0; g < (numel + kDropoutGroup - 1) / kDropoutGroup; ++g) {
      if (aligned && g < numel / kDropoutGroup) {
        dropout_group<true, scalar_t, float>(s, d, numel, g, p);
      } else {
        dropout_group<false, scalar_t, float>(s, d, numel, g, p);
      }
    }
  });
}

void bias_relu_dropout_forward(at::Tensor x, at::Tensor bias, at::Tensor y, int64_t seed, int64_t threshold,
                               double scale) {
  const DropoutParams<float> p = make_dropout_params<float>(seed, threshold, scale);
  const int64_t numel = x.numel(), N = x.size(1);
  EMULATOR_DISPATCH(x.scalar_type(), "bias_relu_dropout_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const bool aligned = N % kDropoutGroup == 0 && is_pack4_aligned(xp) && is_pack4_aligned(bp) && is_pack4_aligned(yp);
    for (int64_t g = 0; g < (numel + kDropoutGroup - 1) / kDropoutGroup; ++g) {
      if (aligned) {
        bias_relu_dropout_group<true, scalar_t, float>(xp, bp, yp, numel, N, g, p);
      } else {
        bias_relu_dropout_group<false, scalar_t, float>(xp, bp, yp, numel, N, g, p);
      }
    }
  });
}

void bias_relu_dropout_backward(at::Tensor dy, at::Tensor y, at::Tensor dx, at::Tensor dbias, int64_t seed,
                                int64_t threshold, double scale) {
  const DropoutParams<float> p = make_dropout_params<float>(seed, threshold, scale);
  const int64_t M = dy.size(0), N = dy.size(1);
  EMULATOR_DISPATCH(dy.scalar_type(), "bias_relu_dropout_backward", [&] {
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dbp = dbias.data_ptr<scalar_t>();
    const bool aligned =
        N % kDropoutGroup == 0 && is_pack4_aligned(dyp) && is_pack4_aligned(yp) && is_pack4_aligned(dxp);
    std::vector<float> lane_sums(static_cast<size_t>(kDbiasLanes * kBlockColumns));
    const int64_t chunks = dbias_chunks(M);
    std::vector<float> partial(static_cast<size_t>(chunks > 1 ? chunks * N : 0));
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {  // grid axis y
      for (int64_t cb = 0; cb < (N + kBlockColumns - 1) / kBlockColumns; ++cb) {  // grid axis x
        // Every thread (t, q) of the block: its lane's rows of the chunk, then its sums into shared memory.
        for (int t = 0; t < kDbiasLanes; ++t) {
          for (int q = 0; q < kBlockQuads; ++q) {
            const int64_t c = cb * kBlockColumns + q * kDropoutGroup;
            const int count = static_cast<int>(N - c >= kDropoutGroup ? kDropoutGroup : (N - c > 0 ? N - c : 0));
            float s[kDropoutGroup] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (aligned) {  // count is 0 or 4
              if (count == kDropoutGroup) {
                bias_relu_dropout_backward_lane<true, scalar_t, float>(dyp, yp, dxp, M, N, c, count, chunk, t, p, s);
              }
            } else if (count > 0) {
              bias_relu_dropout_backward_lane<false, scalar_t, float>(dyp, yp, dxp, M, N, c, count, chunk, t, p, s);
            }
            for (int l = 0; l < kDropoutGroup; ++l) lane_sums[t * kBlockColumns + q * kDropoutGroup + l] = s[l];
          }
        }
        // The tree, one __syncthreads-separated step at a time.
        for (int h = kDbiasLanes / 2; h >= 1; h /= 2) {
          for (int t = 0; t < h; ++t) {
            for (int k = 0; k < kBlockColumns; ++k) lane_sums[t * kBlockColumns + k] += lane_sums[(t + h) * kBlockColumns + k];
          }
        }
        for (int k = 0; k < kBlockColumns && cb * kBlockColumns + k < N; ++k) {
          if (chunks == 1) {
            dbp[cb * kBlockColumns + k] = static_cast<scalar_t>(lane_sums[k]);
          } else {
            partial[chunk * N + cb * kBlockColumns + k] = lane_sums[k];
          }
        }
      }
    }
    if (chunks > 1) {  // dbias_chunk_sum_kernel: one thread per column
      for (int64_t n = 0; n < N; ++n) {
        float sum = 0.0f;
        for (int64_t j = 0; j < chunks; ++j) sum += partial[j * N + n];
        dbp[n] = static_cast<scalar_t>(sum);
      }
    }
  });
}

// The Philox words of one counter and key (for known-answer tests).
std::vector<int64_t> philox(std::vector<int64_t> counter, std::vector<int64_t> key) {
  TORCH_CHECK(counter.size() == 4 && key.size() == 2, "philox: counter has 4 words, key 2");
  const Philox4x32 r = philox4x32_10(
      Philox4x32{static_cast<uint32_t>(counter[0]), static_cast<uint32_t>(counter[1]),
                 static_cast<uint32_t>(counter[2]), static_cast<uint32_t>(counter[3])},
      static_cast<uint32_t>(key[0]), static_cast<uint32_t>(key[1]));
  return {r.x0, r.x1, r.x2, r.x3};
}

// The Philox words of group g under the seed's key (the element index -> counter mapping).
std::vector<int64_t> group_randoms(int64_t group, int64_t seed) {
  const Philox4x32 r = dropout_group_randoms(group, make_dropout_key(seed));
  return {r.x0, r.x1, r.x2, r.x3};
}

// keep of elements [first, first + count) as bits (dropout_run_keep_bits: count <= 4).
int64_t run_keep_bits(int64_t first, int64_t count, int64_t seed, int64_t threshold) {
  TORCH_CHECK(count >= 1 && count <= kDropoutGroup, "run_keep_bits: count in [1, 4]");
  return dropout_run_keep_bits(first, static_cast<int>(count), make_dropout_key(seed), static_cast<uint32_t>(threshold));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("apply_dropout", &apply_dropout);
  m.def("bias_relu_dropout_forward", &bias_relu_dropout_forward);
  m.def("bias_relu_dropout_backward", &bias_relu_dropout_backward);
  m.def("philox", &philox);
  m.def("group_randoms", &group_randoms);
  m.def("run_keep_bits", &run_keep_bits);
}
