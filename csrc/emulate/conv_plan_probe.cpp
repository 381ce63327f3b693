// conv.h's launch planning as a plain C function, for tests and tables without a GPU (tests/test_conv_plan.py,
// benchmarks/tools/conv_grid_table.py load it with ctypes after `g++ -shared`).  It runs the launchers' own plan
// functions (plan_conv, plan_conv_dgrad, plan_conv_wgrad, conv_wgrad_splits) on a device described by its
// multiprocessor count, opt-in shared memory per block and the kernel's residency, with the tensors the Python
// layer passes: x, dy, y, dx channels_last-contiguous, 16-byte aligned bases, weight rows padded to 16 bytes.
#include <cstdio>
#include <cstring>

#include "conv.h"

namespace {

ak::ConvProblem problem_of(const int64_t* g, int64_t row_elements, ak::ConvDtype dtype) {
  ak::ConvProblem p{};
  p.N = g[0]; p.C = g[1]; p.H = g[2]; p.W = g[3];
  p.Cout = g[4]; p.KH = g[5]; p.KW = g[6]; p.SH = g[7]; p.SW = g[8]; p.PH = g[9]; p.PW = g[10]; p.groups = g[11];
  if (p.groups < 1 || p.SH < 1 || p.SW < 1) return p;  // conv_problem_error reports it
  p.OH = (p.H + 2 * p.PH - p.KH) / p.SH + 1;
  p.OW = (p.W + 2 * p.PW - p.KW) / p.SW + 1;
  const int64_t vec = 16 / ak::conv_dtype_size(dtype);
  p.w_row_stride = (row_elements + vec - 1) / vec * vec;
  p.y_sc = 1; p.y_sw = p.Cout; p.y_sh = p.OW * p.Cout; p.y_sn = p.OH * p.OW * p.Cout;
  return p;
}

}  // namespace

// kind: 0 forward, 1 dgrad, 2 wgrad.  geometry: N, C, H, W, Cout, KH, KW, SH, SW, PH, PW, groups.  dtype: conv.h
// ConvDtype.  out: tile, grid x, y, z, splits (wgrad; 1 otherwise).  Returns 0, or 1 with the problem's error in
// reason; reason gets the plan's reason otherwise.
extern "C" int conv_plan_probe(int kind, const int64_t* geometry, int dtype_code, int allow_tf32, int sm_count,
                               int64_t smem_optin, int blocks_per_sm, int64_t* out, char* reason, int reason_len) {
  const auto dtype = static_cast<ak::ConvDtype>(dtype_code);
  const int64_t groups = geometry[11] > 0 ? geometry[11] : 1;
  const int64_t Cg = geometry[1] / groups, Og = geometry[4] / groups, KHW = geometry[5] * geometry[6];
  const char* why = nullptr;
  int tile = 0;
  ak::ConvGridSize grid{};
  int64_t splits = 1;
  if (kind == 0) {
    const ak::ConvProblem p = problem_of(geometry, KHW * Cg, dtype);
    if (!(why = ak::conv_problem_error(p))) {
      const ak::ConvPlan plan = ak::plan_conv(p, dtype, allow_tf32 != 0, sm_count, 0, 0, 0, smem_optin);
      tile = plan.tile;
      grid = ak::conv_forward_grid(p, tile);
      std::snprintf(reason, reason_len, "%s", plan.reason);
    }
  } else if (kind == 1) {
    ak::ConvDgradProblem d{};
    d.p = problem_of(geometry, KHW * Og, dtype);
    d.dx_sc = 1; d.dx_sw = d.p.C; d.dx_sh = d.p.W * d.p.C; d.dx_sn = d.p.H * d.p.W * d.p.C;
    if (!(why = ak::conv_dgrad_problem_error(d))) {
      const ak::ConvDgradPlan plan =
          ak::plan_conv_dgrad(d, dtype, allow_tf32 != 0, sm_count, 0, 0, 0, 0, smem_optin);
      tile = plan.tile;
      grid = ak::conv_dgrad_grid(d.p, tile);
      std::snprintf(reason, reason_len, "%s", plan.reason);
    }
  } else {
    const ak::ConvWgradProblem w{problem_of(geometry, KHW * Cg, dtype), 1};
    if (!(why = ak::conv_wgrad_problem_error(w))) {
      const ak::ConvWgradPlan plan = ak::plan_conv_wgrad(w, dtype, allow_tf32 != 0, 0, 0, 0, smem_optin);
      tile = plan.tile;
      splits = ak::conv_wgrad_splits(w.p, tile, sm_count, blocks_per_sm);
      grid = ak::conv_wgrad_grid(w.p, tile, splits);
      std::snprintf(reason, reason_len, "%s", plan.reason);
    }
  }
  if (why != nullptr) {
    std::snprintf(reason, reason_len, "%s", why);
    return 1;
  }
  out[0] = tile; out[1] = grid.x; out[2] = grid.y; out[3] = grid.z; out[4] = splits;
  return 0;
}

// conv.h's compiled tiles: out[t*8 + 0..5] = bm, bn, bk, warps_m, warps_n, stages (6, 7 unused), and their dynamic
// shared memory smem[(t*3 + kind)*3 + dtype] in bytes (kind as conv_plan_probe's).  Returns the tile count.
extern "C" int conv_plan_tiles(int64_t* out, int64_t* smem) {
  for (int t = 0; t < ak::kConvTileCount; ++t) {
    const ak::ConvTileShape& s = ak::kConvTiles[t];
    const int64_t row[8] = {s.bm, s.bn, s.bk, s.warps_m, s.warps_n, s.stages, 0, 0};
    std::memcpy(out + t * 8, row, sizeof(row));
    for (int k = 0; k < 3; ++k)
      for (int d = 0; d < 3; ++d)
        smem[(t * 3 + k) * 3 + d] =
            int64_t(ak::conv_smem_bytes(s, static_cast<ak::ConvDtype>(d), static_cast<ak::ConvKernel>(k)));
  }
  return ak::kConvTileCount;
}
