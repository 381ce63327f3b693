// Shared-memory bank-conflict counting for the host emulators (conv_cuda_emulator.cpp): every thread logs
// the shared-memory accesses its device code makes (site, address, width); after a block, the accesses of a
// warp are grouped into warp-wide instructions -- the n-th access a lane makes at a site is taken to be the
// same instruction as every other lane's n-th access there (exact for the kernels' warp-uniform loops) --
// and each instruction's shared-memory wavefronts are counted as the hardware serves them:
//   32 banks of 4 bytes; an access of up to 4 bytes per lane is one phase of all 32 lanes, 8 bytes two
//   phases of 16 lanes (half warps), 16 bytes four phases of 8 lanes (quarter warps); ldmatrix one phase per
//   8x8 matrix (the 8 row addresses of 16 bytes its 8 lanes supply).  A phase takes as many wavefronts as the
//   most distinct 4-byte words any one bank holds among its lanes' bytes (lanes reading one word share it).
// The ideal is one wavefront per phase with an active lane; wavefronts above it are bank conflicts.
// These are counts of what the code asks of the banks, not measurements.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace smem_banks {

enum AccessKind : int { kPlain = 0, kLdmatrix = 1 };

struct Access {
  int site;
  int seq;            // how many accesses this thread made at `site` before this one
  uint32_t offset;    // byte offset into shared memory
  int bytes;          // per lane: 1, 2, 4, 8, 16 (kLdmatrix: 16 per row address)
  AccessKind kind;
  int matrices;       // kLdmatrix: matrices loaded (1, 2, 4)
};

struct SiteStats {
  long instructions = 0;  // warp-wide instructions
  long wavefronts = 0;
  long ideal = 0;         // one per active phase
  int worst_ways = 0;     // largest wavefronts / phase of any phase
};

// Per-thread logs of the running block (index: thread id); one thread writes each.
inline std::vector<std::vector<Access>> g_logs;
inline thread_local std::vector<Access>* tl_log = nullptr;
inline thread_local std::array<int, 64> tl_seq{};
inline bool g_enabled = true;

inline void begin_block(int nthreads) {
  g_logs.assign(nthreads, {});
}

inline void begin_thread(int tid) {
  tl_log = g_enabled ? &g_logs[tid] : nullptr;
  tl_seq.fill(0);
}

inline void record(int site, uint32_t offset, int bytes, AccessKind kind = kPlain, int matrices = 0) {
  if (tl_log == nullptr) return;
  tl_log->push_back({site, tl_seq[site]++, offset, bytes, kind, matrices});
}

// Wavefronts of one phase: lanes' (offset, bytes) pairs.
inline int phase_wavefronts(const std::vector<std::pair<uint32_t, int>>& lanes) {
  std::array<std::vector<uint32_t>, 32> words;
  for (const auto& [off, bytes] : lanes)
    for (uint32_t w = off / 4; w <= (off + bytes - 1) / 4; ++w) {
      auto& b = words[w % 32];
      if (std::find(b.begin(), b.end(), w) == b.end()) b.push_back(w);
    }
  size_t most = 0;
  for (const auto& b : words) most = std::max(most, b.size());
  return static_cast<int>(most);
}

// Wavefronts and ideal wavefronts of one warp-wide instruction (lanes: each lane's access or nullptr).
inline std::pair<int, int> instruction_wavefronts(const std::array<const Access*, 32>& lanes, int* worst) {
  const Access* first = nullptr;
  for (const Access* a : lanes)
    if (a != nullptr && first == nullptr) first = a;
  std::vector<std::vector<std::pair<uint32_t, int>>> phases;
  if (first->kind == kLdmatrix) {
    phases.resize(first->matrices);
    for (int lane = 0; lane < 8 * first->matrices; ++lane)
      if (lanes[lane]) phases[lane / 8].push_back({lanes[lane]->offset, 16});
  } else {
    const int per_phase = first->bytes >= 16 ? 8 : first->bytes == 8 ? 16 : 32;
    phases.resize(32 / per_phase);
    for (int lane = 0; lane < 32; ++lane)
      if (lanes[lane]) phases[lane / per_phase].push_back({lanes[lane]->offset, lanes[lane]->bytes});
  }
  int wavefronts = 0, ideal = 0;
  for (const auto& ph : phases) {
    if (ph.empty()) continue;
    const int wf = phase_wavefronts(ph);
    wavefronts += wf;
    ideal += 1;
    *worst = std::max(*worst, wf);
  }
  return {wavefronts, ideal};
}

// Folds the block's logs into `stats` (site -> counts).
inline void end_block(std::map<int, SiteStats>& stats) {
  const int nthreads = static_cast<int>(g_logs.size());
  for (int w0 = 0; w0 < nthreads; w0 += 32) {
    std::map<std::pair<int, int>, std::array<const Access*, 32>> insts;  // (site, seq) -> lane -> access
    for (int lane = 0; lane < 32 && w0 + lane < nthreads; ++lane)
      for (const Access& a : g_logs[w0 + lane])
        insts.try_emplace({a.site, a.seq}).first->second[lane] = &a;  // new entries: every lane nullptr
    for (const auto& [key, lanes] : insts) {
      SiteStats& s = stats[key.first];
      ++s.instructions;
      const auto [wavefronts, ideal] = instruction_wavefronts(lanes, &s.worst_ways);
      s.wavefronts += wavefronts;
      s.ideal += ideal;
    }
  }
  g_logs.clear();
}

}  // namespace smem_banks
