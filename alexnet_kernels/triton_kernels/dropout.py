"""Triton kernels of counter-based dropout and the fused bias + ReLU + dropout (the FC epilogue).

The mask is a pure function of (seed, element index), identical in every backend (csrc/philox.h):
    key     = (low 32 bits, high 32 bits) of the 64-bit seed
    group g = i // 4 of element i (its index in the tensor's memory order), lane = i % 4
    r       = Philox-4x32-10(counter = (lo32(g), hi32(g), 0, 0), key)[lane]
    keep(i) = (r >> 8) >= threshold,      threshold = round(p * 2**24)
One Philox call (10 rounds) serves four consecutive elements.  Nothing mask-sized is stored: the backward
regenerates the mask from the seed.  Values are computed in fp32 and rounded once:
    dropout            y = x * (keep ? 1/(1-p) : 0)                     (NaN * 0 stays NaN, as in torch)
    bias_relu_dropout  h = relu(x + bias), y = h * (keep ? 1/(1-p) : 0)
backward                dx = dy * (keep ? 1/(1-p) : 0)
                        d(pre) = keep and relu passes (read from the saved y: !(y <= 0)) ? dy/(1-p) : 0,
                        d(bias) = column sums of d(pre), reduced in a fixed order (deterministic).
"""
import triton
import triton.language as tl

from ._launch import launch

# tl.constexpr(...) objects, not `NAME: tl.constexpr = ...` annotations: the compiler rejects a @triton.jit
# function's access to any other global (the interpreter does not check; tests/test_triton_compile.py does).
PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox-4x32-10 (Random123) on uint32 tensors: counter (c0..c3), key (k0, k1)."""
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def _seed_key(seed_ptr):
    # The seed is read from device memory (drawn by torch's generator on the device), so a CUDA-graph
    # replay uses the fresh seed its capture's torch.randint wrote.
    seed = tl.load(seed_ptr).to(tl.uint64, bitcast=True)
    return (seed & 0xFFFFFFFF).to(tl.uint32), (seed >> 32).to(tl.uint32)


@triton.jit
def _philox_of_groups(groups, k0, k1):
    """The four uint32 draws of each int64 group index (any shape)."""
    zero = (groups * 0).to(tl.uint32)
    return philox4x32_10((groups & 0xFFFFFFFF).to(tl.uint32), (groups >> 32).to(tl.uint32), zero, zero,
                         zero + k0, zero + k1)


@triton.jit
def _pick_lane(lane, r0, r1, r2, r3):
    return tl.where(lane == 0, r0, tl.where(lane == 1, r1, tl.where(lane == 2, r2, r3)))


@triton.jit
def _keep(r, threshold):
    # (r >> 8) < 2**24 compared as int32 with threshold (in [0, 2**24]), with no method called on threshold:
    # were it specialised (the JIT makes an int argument equal to 1 a Python constant), threshold.to(...)
    # would not compile.  The kernels also exempt it from specialisation (do_not_specialize): one compiled
    # kernel serves every p.
    return (r >> 8).to(tl.int32) >= threshold


@triton.jit
def _flat_tile_keep(seed_ptr, numel, threshold, BLOCK_G: tl.constexpr):
    # This program's [BLOCK_G, 4] tile of a flat (memory-order) range: row g holds the four elements of
    # group g, one Philox call for them.  (offsets, in range, kept) of the tile's elements.
    k0, k1 = _seed_key(seed_ptr)
    groups = tl.program_id(0).to(tl.int64) * BLOCK_G + tl.arange(0, BLOCK_G)
    lane = tl.arange(0, 4)[None, :]
    offs = groups[:, None] * 4 + lane
    r0, r1, r2, r3 = _philox_of_groups(groups, k0, k1)
    keep = _keep(_pick_lane(lane, r0[:, None], r1[:, None], r2[:, None], r3[:, None]), threshold)
    return offs, offs < numel, keep


@triton.jit(do_not_specialize=["threshold"])
def dropout_kernel(x_ptr, y_ptr, seed_ptr, numel, threshold, scale, BLOCK_G: tl.constexpr):
    # y = x * (keep ? scale : 0) over a flat (memory-order) range; also the backward (x = dy, y = dx).
    offs, mask, keep = _flat_tile_keep(seed_ptr, numel, threshold, BLOCK_G)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.where(keep, scale, 0.0)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["threshold"])
def bias_relu_dropout_forward_kernel(x_ptr, b_ptr, y_ptr, seed_ptr, numel, N, threshold, scale,
                                     BLOCK_G: tl.constexpr):
    # The flat (M, N) row-major range as in dropout_kernel; the bias column is i % N.
    offs, mask, keep = _flat_tile_keep(seed_ptr, numel, threshold, BLOCK_G)
    v = (tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
         + tl.load(b_ptr + offs % N, mask=mask, other=0.0).to(tl.float32))
    h = tl.where(v < 0, 0.0, v)  # relu as torch.relu: NaN and -0 kept
    tl.store(y_ptr + offs, (h * tl.where(keep, scale, 0.0)).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["threshold"])
def bias_relu_dropout_backward_kernel(dy_ptr, y_ptr, dx_ptr, partial_ptr, seed_ptr, M, N, threshold, scale,
                                      ROW_GROUPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr,
                                      ROW_STEPS: tl.constexpr):
    # d(pre) = keep and relu passes ? dy * scale : 0.  For a kept element y = h * scale, so relu passes
    # where !(y <= 0) (h > 0, or NaN: torch's relu backward lets the gradient through there).
    # A program owns ROW_STEPS * BLOCK_M rows of 4 * BLOCK_Q columns and walks them in [BLOCK_M, BLOCK_Q, 4]
    # tiles, top to bottom; it writes dx and its rows' column sums partial[pid_m, :] (fp32, accumulated in
    # that order), which the launcher adds in pid_m order: deterministic, no atomics, and the scratch is
    # one row per ROW_STEPS * BLOCK_M rows of dy.
    # ROW_GROUPS (N % 4 == 0): a quad of columns is one Philox group; else each element draws its own.
    k0, k1 = _seed_key(seed_ptr)
    pid_m = tl.program_id(0)
    quads = tl.program_id(1) * BLOCK_Q + tl.arange(0, BLOCK_Q)
    lane = tl.arange(0, 4)[None, None, :]
    cols = quads[None, :, None] * 4 + lane                       # [1, BLOCK_Q, 4]
    col_sums = tl.zeros((BLOCK_Q, 4), dtype=tl.float32)
    for step in range(ROW_STEPS):
        rows = (pid_m.to(tl.int64) * ROW_STEPS + step) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs = rows[:, None, None] * N + cols                    # [BLOCK_M, BLOCK_Q, 4]
        mask = (rows < M)[:, None, None] & (cols < N)
        if ROW_GROUPS:
            r0, r1, r2, r3 = _philox_of_groups((rows[:, None] * N + quads[None, :] * 4) >> 2, k0, k1)
            r = _pick_lane(lane, r0[:, :, None], r1[:, :, None], r2[:, :, None], r3[:, :, None])
        else:
            r0, r1, r2, r3 = _philox_of_groups(offs >> 2, k0, k1)
            r = _pick_lane(offs & 3, r0, r1, r2, r3)
        keep = _keep(r, threshold)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dpre = tl.where(keep & ~(y <= 0) & mask, dy * scale, 0.0)
        tl.store(dx_ptr + offs, dpre.to(dx_ptr.dtype.element_ty), mask=mask)
        col_sums += tl.sum(dpre, axis=0)                         # [BLOCK_Q, 4]
    col_offs = cols.reshape(BLOCK_Q, 4)
    tl.store(partial_ptr + pid_m.to(tl.int64) * N + col_offs, col_sums, mask=col_offs < N)  # 64-bit: M*N may pass 2**31


def _threshold_scale(p):
    # threshold = round(p * 2**24) in [0, 2**24]; scale unused when nothing is kept (p == 1).
    return int(round(p * (1 << 24))), (1.0 / (1.0 - p) if p < 1.0 else 1.0)


DROPOUT_BLOCK_G = 256   # 1024 elements per program


def dropout(x, y, seed, p):
    """y = dropout(x) with the mask of (seed, memory-order index); x, y: 1-D contiguous; seed: int64 (1,)."""
    threshold, scale = _threshold_scale(p)
    numel = x.numel()
    if numel == 0:
        return
    launch(dropout_kernel, _flat_grid(numel), x, y, seed, numel, threshold, scale, BLOCK_G=DROPOUT_BLOCK_G,
           num_warps=4)


def _flat_grid(numel):
    return (triton.cdiv(numel, 4 * DROPOUT_BLOCK_G),)


def bias_relu_dropout_forward(x, bias, y, seed, p):
    """y = dropout(relu(x + bias)); x, y: (M, N) contiguous, bias (N,)."""
    threshold, scale = _threshold_scale(p)
    M, N = x.shape
    if M * N == 0:
        return
    launch(bias_relu_dropout_forward_kernel, _flat_grid(M * N), x, bias, y, seed, M * N, N, threshold, scale,
           BLOCK_G=DROPOUT_BLOCK_G, num_warps=4)


# The backward's tiles: BACKWARD_TILE elements (BLOCK_M rows of 4 * BLOCK_Q <= BACKWARD_COLUMNS columns) per
# step.  A program walks at least BACKWARD_MIN_ROWS rows, so the d(bias) scratch (one fp32 row per program
# row, written and read back) adds at most 8 / (3 * BACKWARD_MIN_ROWS * element size) to the 3 * M * N
# elements the backward must move (4.2 % in fp16/bf16, 2.1 % in fp32), and more rows while the grid would
# pass BACKWARD_MAX_PROGRAMS (about one wave of 4-warp programs on a 132-SM GPU; fewer scratch rows).
BACKWARD_TILE = 1024
BACKWARD_COLUMNS = 32
BACKWARD_MIN_ROWS = 32
BACKWARD_MAX_PROGRAMS = 2048


def backward_plan(M, N):
    """(grid, BLOCK_M, BLOCK_Q, ROW_STEPS) of the bias + ReLU + dropout backward for an (M, N) matrix; the
    d(bias) scratch is (grid[0], N) fp32."""
    block_q = min(triton.next_power_of_2(triton.cdiv(N, 4)), BACKWARD_COLUMNS // 4)
    block_m = max(1, min(triton.next_power_of_2(M), BACKWARD_TILE // (4 * block_q)))
    col_blocks = triton.cdiv(N, 4 * block_q)
    steps = 1
    while block_m * steps < min(M, BACKWARD_MIN_ROWS):
        steps *= 2
    while block_m * steps < M and triton.cdiv(M, block_m * steps) * col_blocks > BACKWARD_MAX_PROGRAMS:
        steps *= 2
    return (triton.cdiv(M, block_m * steps), col_blocks), block_m, block_q, steps


def bias_relu_dropout_backward(dy, y, dx, seed, p):
    """Write dx; return d(bias): per program fp32 column sums, then their sum in program (row) order, rounded
    once to dx's dtype (the same on every run)."""
    import torch
    threshold, scale = _threshold_scale(p)
    M, N = dy.shape
    if M * N == 0:
        return torch.zeros(N, dtype=dx.dtype, device=dx.device)
    grid, block_m, block_q, steps = backward_plan(M, N)
    partial = torch.empty((grid[0], N), dtype=torch.float32, device=dx.device)
    launch(bias_relu_dropout_backward_kernel, grid, dy, y, dx, partial, seed, M, N, threshold, scale,
           ROW_GROUPS=N % 4 == 0, BLOCK_M=block_m, BLOCK_Q=block_q, ROW_STEPS=steps, num_warps=4)
    return partial.sum(0).to(dx.dtype)
