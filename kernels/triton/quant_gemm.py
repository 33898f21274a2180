"""Triton kernels of the quantized linear layers: per-token activation quantization, the W8A8
GEMM and the FP16/BF16-weight GEMM, each with the fused epilogue (dequant, bias, activation,
residual). Same math as the C++ kernels (see csrc/quant/linear.hpp).

The uint8 activations enter ``tl.dot`` as int8 ``q - 128`` (Tensor cores take s8 x s8); the
epilogue adds back ``(128 - zp) * colsum(w)``.

Two W8A8 paths, chosen by M (``FUSED_MAX_M``):

- small M (decode-style serving, M <= 16): ONE launch. Each program first scans its rows of
  the float32 activations over the whole K (the per-token range; the rows are a few KB and stay in
  L2), then streams its slice of the weight, quantizing the activation tiles on the fly with
  exactly the rules of the standalone quantization kernel. Here the weight read is the floor, so
  the configs use narrow N tiles and split-K to put more CTAs on it; split-K partial sums are
  INT32 (exact, order-free) and the last CTA of a tile (a ticket counter) applies the epilogue
  and leaves the workspace zeroed again.
- larger M: the per-token quantization kernel, then a tiled INT8 GEMM with GROUP_M swizzling.

Host overhead matters as much as the kernels at small M, so the launchers allocate only outputs,
never synchronize by default, and after the first call for a shape call the tuned kernel
directly (skipping the autotuner's per-call bookkeeping).

Non-finite activations: a row of x holding NaN/inf gives a NaN output row (``poison``, never a
finite wrong answer) and is flagged per row; ``check_finite=True`` turns the flag into a
``ValueError`` at the cost of one device synchronization (skipped during CUDA graph capture).
The FP16/BF16 path rounds the activations to the weight's type for the Tensor cores (as an fp16
model does); a value outside float16's range gives a NaN output row the same way.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from . import _check_interpreter

_check_interpreter()

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
_INTERP = tl.constexpr(_INTERPRET)
_ACTS = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}
_FLT_MAX = tl.constexpr(3.4028234663852886e38)  # globals used in kernels must be constexpr
_FLT_MIN = tl.constexpr(1.1754943508222875e-38)
_NAN_BITS = tl.constexpr(0x7FC00000)  # (a NaN global breaks triton's "global unchanged" check: nan != nan)
FUSED_MAX_M = int(os.environ.get("PYPERFCORE_W8A8_FUSED_MAX_M", "16"))  # W8A8 rows up to this: one fused launch
# Which kernels take those rows (W8A8 and FP16/BF16 weights alike) on a GPU: "triton" (the fused
# W8A8 kernel, the FP16/BF16 pointer kernel), "cuda" (the CUDA C++ small-M kernels, launched from
# C++: kernels/cuda/linear_small.cu) or "auto" (default): with autotuning on, the first call of a
# shape checks the CUDA kernel's output against the Triton kernel's, times both per call (host
# submission and cold device time, the larger of the two being what a model's forward pays at
# these sizes) and keeps the faster; without timing (autotuning off, CUDA graph capture)
# "triton", the path the H100 checks measured. _SMALL holds the picks, SMALL_WHY the times or
# why CUDA was left out.
SMALL_M_PATH = os.environ.get("PYPERFCORE_SMALL_M_PATH", "auto")
# M >= TMA_MIN_M on Hopper or later: persistent GEMM kernels fed by TMA (_half_tma_kernel for
# FP16/BF16 weights with x already of the weight's type, _w8a8_tma_kernel for the two-pass W8A8
# GEMM). "auto" (default): with autotuning on, the first call of a shape times their configs
# against the pointer kernel's tuned winner and keeps the fastest; with autotuning off, the
# pointer kernel. "1": always where they apply, "0": never.
TMA = os.environ.get("PYPERFCORE_TRITON_TMA", "auto")
# 512: below it the layer is short enough (~20 us at M = 128, K = N = 4096 on an H100) that the
# TMA path's extra host work per call (two tensor descriptors, a few us on a serving CPU) can
# cost more in a single synchronized call than a faster kernel saves; the pick itself compares
# device times only. The benchmarks and the sweep time both kernels from M = 128 regardless.
TMA_MIN_M = int(os.environ.get("PYPERFCORE_TRITON_TMA_MIN_M", "512"))
_PATHS = ("fused", "two_pass", "pointer", "tma", "cuda")
_CUDA_DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_CUDA_MOD: list = []


@triton.jit
def _rne(v):
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)


@triton.jit
def _act_quant_kernel(x_ptr, q_ptr, s_ptr, z_ptr, bad_ptr, K, s_xm, s_qm, SYMMETRIC: tl.constexpr, BLOCK_K: tl.constexpr,
                      ONE_TILE: tl.constexpr):
    # One program per row (token): its [min, max] with 0 included, then uint8 codes. ONE_TILE
    # (K <= BLOCK_K, every K up to 4096): the row is read once and quantized from registers;
    # otherwise a range pass over K and a second pass that reads the row again.
    row = tl.program_id(0).to(tl.int64)
    if ONE_TILE:
        offs = tl.arange(0, BLOCK_K)
        m = offs < K
        v = tl.load(x_ptr + row * s_xm + offs, mask=m, other=0.0).to(tl.float32)
        fin = tl.abs(v) <= _FLT_MAX
        badr = tl.max(tl.where(m & ~fin, 1, 0), axis=0)
        vf = tl.where(fin, v, 0.0)
        mn = tl.minimum(tl.min(vf, axis=0), 0.0)
        mx = tl.maximum(tl.max(vf, axis=0), 0.0)
    else:
        lo = tl.zeros([BLOCK_K], dtype=tl.float32)
        hi = tl.zeros([BLOCK_K], dtype=tl.float32)
        bad = tl.zeros([BLOCK_K], dtype=tl.int32)
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            m = offs < K
            v = tl.load(x_ptr + row * s_xm + offs, mask=m, other=0.0).to(tl.float32)
            fin = tl.abs(v) <= _FLT_MAX
            bad = tl.maximum(bad, tl.where(m & ~fin, 1, 0))
            v = tl.where(fin, v, 0.0)
            lo = tl.minimum(lo, v)
            hi = tl.maximum(hi, v)
        mn = tl.min(lo, axis=0)
        mx = tl.max(hi, axis=0)
        badr = tl.max(bad, axis=0)
    if SYMMETRIC:
        amax = tl.maximum(-mn, mx)
        s = tl.math.div_rn(amax, 127.0)
        s = tl.where(s >= _FLT_MIN, s, 1.0)
        inv = tl.math.div_rn(1.0, s)
        zp = 128.0
        qmin = 1.0
    else:
        rng = mx - mn
        s = tl.math.div_rn(rng, 255.0)
        s = tl.where(s >= _FLT_MIN, s, 1.0)
        inv = tl.math.div_rn(1.0, s)
        zp = tl.minimum(tl.maximum(_rne(-mn * inv), 0.0), 255.0)
        qmin = 0.0
    if ONE_TILE:
        qv = tl.minimum(tl.maximum(_rne(v * inv) + zp, qmin), 255.0)
        tl.store(q_ptr + row * s_qm + offs, qv.to(tl.int32).to(tl.uint8), mask=m)
    else:
        for k0 in range(0, K, BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            m = offs < K
            v = tl.load(x_ptr + row * s_xm + offs, mask=m, other=0.0).to(tl.float32)
            qv = tl.minimum(tl.maximum(_rne(v * inv) + zp, qmin), 255.0)
            tl.store(q_ptr + row * s_qm + offs, qv.to(tl.int32).to(tl.uint8), mask=m)
    tl.store(s_ptr + row, s)
    tl.store(z_ptr + row, zp.to(tl.int32))
    tl.store(bad_ptr + row, badr)


@triton.jit
def _activation(v, ACT: tl.constexpr):
    if ACT == 1:
        v = tl.maximum(v, 0.0)
    elif ACT == 2:
        v = 0.5 * v * (1.0 + tl.math.erf(v * 0.7071067811865476))
    elif ACT == 3:
        u = 0.7978845608028654 * (v + 0.044715 * v * v * v)
        v = v / (1.0 + tl.exp(-2.0 * u))
    elif ACT == 4:
        v = v / (1.0 + tl.exp(-v))
    return v


@triton.jit
def _epilogue_store(v, poison, rm, rn, M, N, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                    HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr):
    # poison: broadcastable to [BLOCK_M, BLOCK_N], true where the input was not finite.
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if HAS_BIAS:
        v = v + tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    v = _activation(v, ACT)
    if HAS_RES:  # residual of any float type, added in fp32
        v = v + tl.load(r_ptr + rm[:, None].to(tl.int64) * s_rm + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    v = tl.where(poison, tl.full(v.shape, _NAN_BITS, tl.int32).to(tl.float32, bitcast=True), v)
    # one rounding to the output's type (float32, or float16/bfloat16: round to nearest even, as
    # the GPU's cvt.rn does; the interpreter truncates to bfloat16, so there it is rounded by hand
    # first, NaN kept as is)
    if y_ptr.dtype.element_ty == tl.bfloat16:
        if _INTERP:
            u = v.to(tl.uint32, bitcast=True)
            u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
            v = tl.where(v != v, v, u.to(tl.float32, bitcast=True))
    tl.store(y_ptr + rm[:, None].to(tl.int64) * s_ym + rn[None, :], v.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _w8a8_epilogue(acc, sa, zp, bad, rm, rn, M, N, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                   HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr):
    # acc = sum_k (q - 128) * w; sa, zp (int32), bad: per row [BLOCK_M].
    sw = tl.load(sw_ptr + rn, mask=rn < N, other=1.0)
    cs = tl.load(cs_ptr + rn, mask=rn < N, other=0)
    acc = acc + (128 - zp)[:, None] * cs[None, :]
    v = acc.to(tl.float32) * (sa[:, None] * sw[None, :])
    _epilogue_store(v, (bad != 0)[:, None], rm, rn, M, N, b_ptr, r_ptr, y_ptr, s_rm, s_ym, HAS_BIAS, ACT, HAS_RES)


# ----------------------------------------------------------------------------------- configs
# <= 8 per kernel so that tuning fits a short device check; pruned by M so that each M bucket
# only compiles and times the configs that make sense for it.
def _cfg(bm, bn, bk, w, s, **extra):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, **extra}, num_warps=w, num_stages=s)


def _fused_configs():
    if _INTERPRET:  # one config (no timing under the interpreter); tests run INTERPRETER_EXTRA too
        return [_cfg(16, 32, 32, 4, 1, SPLIT_K=3)]
    # BLOCK_M 16 (the smallest tl.dot tile); 4096/BLOCK_N * SPLIT_K CTAs stream the weight.
    return [_cfg(16, 32, 256, 4, 4, SPLIT_K=1), _cfg(16, 64, 256, 4, 4, SPLIT_K=1),
            _cfg(16, 64, 128, 4, 4, SPLIT_K=2), _cfg(16, 32, 256, 4, 3, SPLIT_K=2),
            _cfg(16, 64, 256, 4, 3, SPLIT_K=4), _cfg(16, 128, 128, 4, 4, SPLIT_K=4),
            _cfg(16, 128, 256, 8, 3, SPLIT_K=8), _cfg(16, 64, 512, 4, 3, SPLIT_K=2)]


def _gemm_configs():
    if _INTERPRET:
        return [_cfg(16, 32, 32, 4, 1, GROUP_M=2)]
    return [_cfg(32, 64, 256, 4, 4, GROUP_M=8), _cfg(64, 128, 128, 4, 4, GROUP_M=8),
            _cfg(64, 256, 128, 8, 3, GROUP_M=8), _cfg(128, 128, 128, 8, 3, GROUP_M=8),
            _cfg(128, 128, 128, 4, 4, GROUP_M=8), _cfg(128, 256, 128, 8, 3, GROUP_M=8),
            _cfg(256, 128, 128, 8, 3, GROUP_M=8), _cfg(64, 64, 256, 4, 4, GROUP_M=8)]


def _half_configs():
    if _INTERPRET:
        return [_cfg(16, 32, 32, 4, 1, GROUP_M=2)]
    # (H100 round 1: 128x256x64 w8 s3 best at M >= 1024, 0.304 ms at M = 4096 vs cuBLAS + GELU 0.2545;
    # 128x128x64 w8 s3 and 128x128x32 w4 s4 never won; round 2: 128x256x64 and 256x128x64 at
    # 4 stages need 256 KiB of shared memory, over the H100's 227 KiB: 3 stages for those.)
    return [_cfg(16, 32, 128, 4, 4, GROUP_M=8), _cfg(16, 64, 128, 4, 4, GROUP_M=8),
            _cfg(32, 64, 128, 4, 4, GROUP_M=8), _cfg(64, 128, 64, 4, 4, GROUP_M=8),
            _cfg(128, 128, 64, 8, 4, GROUP_M=8), _cfg(128, 256, 64, 8, 3, GROUP_M=8),
            _cfg(64, 256, 64, 8, 4, GROUP_M=8), _cfg(256, 128, 64, 8, 3, GROUP_M=8)]


def _tma_list(table):
    """Configs of a persistent TMA kernel from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages, FLATTEN)
    rows, GROUP_M 8; under the interpreter one small config (tests run INTERPRETER_EXTRA too)."""
    if _INTERPRET:
        return [_cfg(16, 32, 32, 4, 1, GROUP_M=2, FLATTEN=False)]
    return [_cfg(bm, bn, bk, w, st, GROUP_M=8, FLATTEN=fl) for bm, bn, bk, w, st, fl in table]


def _half_tma_configs():
    # The persistent TMA kernel (Hopper and later, M >= TMA_MIN_M): shared memory per stage is
    # (BLOCK_M + BLOCK_N) * BLOCK_K * 2 bytes; FLATTEN merges the tile and K loops so that the
    # next tile's loads are issued during this tile's epilogue (+32 KiB of layout scratch). All
    # within the H100's 227 KiB (tests/quant/test_triton_aot.py builds each for sm_90).
    return _tma_list([(128, 256, 64, 8, 3, True), (128, 256, 64, 8, 4, False), (256, 128, 64, 8, 3, True),
                      (128, 128, 64, 8, 4, True), (128, 128, 128, 8, 3, False), (128, 64, 128, 4, 4, True),
                      (64, 128, 128, 4, 4, True), (64, 64, 128, 4, 4, False)])


def _w8a8_tma_configs():
    # int8 tiles: (BLOCK_M + BLOCK_N) * BLOCK_K bytes per stage
    return _tma_list([(128, 256, 128, 8, 3, True), (128, 256, 128, 8, 4, False), (256, 128, 128, 8, 3, True),
                      (128, 128, 128, 8, 4, True), (128, 128, 256, 8, 3, False), (128, 128, 128, 4, 4, True),
                      (64, 128, 256, 4, 4, True), (64, 64, 256, 4, 4, False)])


# More configs the interpreter tests run explicitly (the autotuned lists above hold one there); the
# GPU tests run them too, so they are built for sm_90 in tests/quant/test_triton_aot.py (an int8
# tl.dot needs BLOCK_K >= 32 there).
INTERPRETER_EXTRA = {"fused": [_cfg(16, 32, 32, 4, 1, SPLIT_K=1), _cfg(16, 64, 64, 4, 1, SPLIT_K=2)],
                     "w8a8": [_cfg(32, 64, 64, 4, 1, GROUP_M=8)], "half": [_cfg(32, 64, 64, 4, 1, GROUP_M=8)],
                     "half_tma": [_cfg(32, 16, 64, 4, 1, GROUP_M=1, FLATTEN=True), _cfg(16, 64, 16, 4, 1, GROUP_M=8, FLATTEN=False)],
                     "w8a8_tma": [_cfg(32, 16, 64, 4, 1, GROUP_M=1, FLATTEN=True), _cfg(16, 64, 32, 4, 1, GROUP_M=8, FLATTEN=False)]}


def _prune_by_m(configs, named_args, **_):
    # Tiles much taller than M waste the MMA and, for small M, the CTAs that stream the weight.
    mb = int(named_args["M_BUCKET"])
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, 2 * mb)]
    if mb >= 256:
        keep = [c for c in keep if c.kwargs["BLOCK_M"] >= 64] or keep
    return keep or configs[:1]


def _bench_fast(kernel_call, quantiles):
    # Shorter than triton's default (25 ms warm-up, 100 ms timing) so that the 8 configs of a
    # shape tune in about a second; the sweep script times the winners properly.
    return triton.testing.do_bench(kernel_call, warmup=5, rep=20, quantiles=quantiles)


def _bucket(m):  # autotune key: M rounded up to a power of two
    return 1 << max(0, (int(m) - 1).bit_length())


def _even_k(a):
    return a["K"] % a["BLOCK_K"] == 0


def _row_mask(a):
    # M (its bucket) smaller than the tile: mask x's rows past M instead of wrapping them onto
    # valid rows, which would read the same rows BLOCK_M / M times over (from L2) in every program
    return int(a["M_BUCKET"]) < a["BLOCK_M"]


_TUNE = dict(key=["M_BUCKET", "N", "K"], prune_configs_by={"early_config_prune": _prune_by_m},
             do_bench=None if _INTERPRET else _bench_fast)


# ----------------------------------------------------------------------------------- kernels
@triton.autotune(configs=_fused_configs(), **_TUNE)
@triton.heuristics({"EVEN_K": _even_k})
@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _w8a8_fused_kernel(x_ptr, w_ptr, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, bad_ptr, ws_ptr, cnt_ptr,
                       M, N, K, M_BUCKET, s_xm, s_wn, s_rm, s_ym,
                       SYMMETRIC: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
                       EVEN_K: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    row_ok = rm < M
    # Columns past the edge read a valid weight row (wrapped) and are never stored: no column
    # mask. Rows of x past M are masked off (their lanes fetch nothing): at M = 1 a BLOCK_M of 16
    # would otherwise read the one row 16 times in both passes, in every program (at K = 4096 and
    # 256 programs, 64 MB of L2 reads for a 16 KB row). The mask is constant along K, so the loads
    # stay vectorized.
    xrow = x_ptr + (rm % M)[:, None].to(tl.int64) * s_xm
    xmask = row_ok[:, None]
    wcol = w_ptr + (rn % N)[None, :].to(tl.int64) * s_wn

    # Pass 1: each row's range over the whole K (0 included), NaN/inf flagged, as _act_quant_kernel.
    # Its own narrow tile (STAT_K columns): three [BLOCK_M, BLOCK_K] tiles would spill registers.
    # The loop is software-pipelined (tl.range num_stages: cp.async into shared memory, two tiles
    # ahead): as a plain loop the sm_90 build waited for each tile before loading the next, K / 128
    # L2 round trips in sequence (32 at K = 4096) before the weight stream could start, with about
    # one program per SM at M <= 16. (Loading four tiles per iteration did not help: ptxas
    # interleaved them back to one in flight.)
    STAT_K: tl.constexpr = 128
    sk = tl.arange(0, STAT_K)
    lo = tl.zeros([BLOCK_M, STAT_K], dtype=tl.float32)
    hi = tl.zeros([BLOCK_M, STAT_K], dtype=tl.float32)
    bad = tl.zeros([BLOCK_M, STAT_K], dtype=tl.int32)
    for k0 in tl.range(0, K, STAT_K, num_stages=3):
        kk = k0 + sk
        v = tl.load(xrow + kk[None, :], mask=xmask & (kk[None, :] < K), other=0.0).to(tl.float32)
        fin = (tl.abs(v) <= _FLT_MAX) | (kk[None, :] >= K)
        bad = tl.maximum(bad, tl.where(fin, 0, 1))
        v = tl.where(fin, v, 0.0)
        lo = tl.minimum(lo, v)
        hi = tl.maximum(hi, v)
    mn = tl.min(lo, axis=1)
    mx = tl.max(hi, axis=1)
    badr = tl.max(bad, axis=1)
    if SYMMETRIC:
        amax = tl.maximum(-mn, mx)
        s = tl.math.div_rn(amax, 127.0)
        s = tl.where(s >= _FLT_MIN, s, 1.0)
        inv = tl.math.div_rn(tl.full([BLOCK_M], 1.0, tl.float32), s)
        zp = tl.full([BLOCK_M], 128.0, tl.float32)
        qmin = 1.0
    else:
        s = tl.math.div_rn(mx - mn, 255.0)
        s = tl.where(s >= _FLT_MIN, s, 1.0)
        inv = tl.math.div_rn(tl.full([BLOCK_M], 1.0, tl.float32), s)
        zp = tl.minimum(tl.maximum(_rne(-mn * inv), 0.0), 255.0)
        qmin = 0.0
    if (pid_n == 0) & (pid_k == 0):
        tl.store(bad_ptr + rm, badr, mask=row_ok)

    # Pass 2: this split's K range; activation tiles quantized on the fly (same rules as pass 1's
    # kernel), weight tiles streamed once.
    per = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = pid_k * per
    k_hi = tl.minimum(k_lo + per, K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        kk = k0 + rk
        if EVEN_K:
            v = tl.load(xrow + kk[None, :], mask=xmask, other=0.0).to(tl.float32)
            b = tl.load(wcol + kk[:, None])
        else:
            v = tl.load(xrow + kk[None, :], mask=xmask & (kk[None, :] < K), other=0.0).to(tl.float32)
            b = tl.load(wcol + kk[:, None], mask=kk[:, None] < K, other=0)
        qv = tl.minimum(tl.maximum(_rne(v * inv[:, None]) + zp[:, None], qmin), 255.0)
        a = (qv - 128.0).to(tl.int8)  # exact: an integer in [-128, 127]
        acc += tl.dot(a, b, out_dtype=tl.int32)

    zpi = zp.to(tl.int32)
    if SPLIT_K == 1:
        _w8a8_epilogue(acc, s, zpi, badr, rm, rn, M, N, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                       HAS_BIAS, ACT, HAS_RES)
    else:
        # INT32 partial sums (exact in any order) into a zeroed [M, N] workspace; the CTA that takes
        # the last ticket of this output tile reads the total back, zeroing it (and the ticket) for
        # the next call, and runs the epilogue. Atomics act at L2, so the reads see every partial.
        mask = row_ok[:, None] & (rn[None, :] < N)
        wsp = ws_ptr + rm[:, None].to(tl.int64) * N + rn[None, :]
        tl.atomic_add(wsp, acc, mask=mask, sem="release")
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(1) + pid_n
        ticket = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel")
        if ticket == SPLIT_K - 1:
            total = tl.atomic_xchg(wsp, tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32), mask=mask, sem="acquire")
            tl.atomic_xchg(cnt_ptr + tile, 0)
            _w8a8_epilogue(total, s, zpi, badr, rm, rn, M, N, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                           HAS_BIAS, ACT, HAS_RES)


@triton.jit
def _tile_mn(tile, num_m, num_n, GROUP_M: tl.constexpr):
    # GROUP_M row-tiles share each column band of the weight while it is in L2.
    per_group = GROUP_M * num_n
    first_m = (tile // per_group) * GROUP_M
    gsz = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % gsz, (tile % per_group) // gsz


@triton.jit
def _swizzle(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    return _tile_mn(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)


@triton.autotune(configs=_gemm_configs(), **_TUNE)
@triton.heuristics({"EVEN_K": _even_k, "ROW_MASK": _row_mask})
@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _w8a8_kernel(q_ptr, w_ptr, sa_ptr, zp_ptr, bad_ptr, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, M, N, K, M_BUCKET,
                 s_qm, s_wn, s_rm, s_ym, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 EVEN_K: tl.constexpr, ROW_MASK: tl.constexpr):
    pid_m, pid_n = _swizzle(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    arow = q_ptr + (rm % M)[:, None].to(tl.int64) * s_qm
    wcol = w_ptr + (rn % N)[None, :].to(tl.int64) * s_wn
    amask = (rm < M)[:, None] if ROW_MASK else tl.full([BLOCK_M, 1], 1, tl.int1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        if EVEN_K:
            if ROW_MASK:  # (rows past M are never stored: any fill value; 0 keeps cp.async's zero fill)
                a = tl.load(arow + kk[None, :], mask=amask, other=0)
            else:
                a = tl.load(arow + kk[None, :])
            b = tl.load(wcol + kk[:, None])
        else:
            a = tl.load(arow + kk[None, :], mask=amask & (kk[None, :] < K), other=128)
            b = tl.load(wcol + kk[:, None], mask=kk[:, None] < K, other=0)
        a = (a ^ 0x80).to(tl.int8, bitcast=True)  # q - 128 for a uint8 q, one op per byte
        acc += tl.dot(a, b, out_dtype=tl.int32)
    rmask = rm < M
    sa = tl.load(sa_ptr + rm, mask=rmask, other=1.0)
    zp = tl.load(zp_ptr + rm, mask=rmask, other=128)
    bad = tl.load(bad_ptr + rm, mask=rmask, other=0)
    _w8a8_epilogue(acc, sa, zp, bad, rm, rn, M, N, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, s_rm, s_ym, HAS_BIAS, ACT, HAS_RES)


@triton.autotune(configs=_half_configs(), **_TUNE)
@triton.heuristics({"EVEN_K": _even_k, "ROW_MASK": _row_mask})
@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _half_kernel(x_ptr, w_ptr, b_ptr, r_ptr, y_ptr, M, N, K, M_BUCKET, s_xm, s_wn, s_rm, s_ym,
                 HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, DOT_F32: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 EVEN_K: tl.constexpr, ROW_MASK: tl.constexpr):
    pid_m, pid_n = _swizzle(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    xrow = x_ptr + (rm % M)[:, None].to(tl.int64) * s_xm
    wcol = w_ptr + (rn % N)[None, :].to(tl.int64) * s_wn
    xmask = (rm < M)[:, None] if ROW_MASK else tl.full([BLOCK_M, 1], 1, tl.int1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        if EVEN_K:
            if ROW_MASK:
                a = tl.load(xrow + kk[None, :], mask=xmask, other=0.0)
            else:
                a = tl.load(xrow + kk[None, :])
            b = tl.load(wcol + kk[:, None])
        else:
            a = tl.load(xrow + kk[None, :], mask=xmask & (kk[None, :] < K), other=0.0)
            b = tl.load(wcol + kk[:, None], mask=kk[:, None] < K, other=0.0)
        if DOT_F32:
            # The interpreter has no bf16 matmul and truncates f32 -> bf16: round to nearest even
            # by hand (as the GPU's cvt.rn does) and multiply the same rounded values in fp32.
            u = a.to(tl.float32).to(tl.uint32, bitcast=True)
            u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
            acc += tl.dot(u.to(tl.float32, bitcast=True), b.to(tl.float32), input_precision="ieee")
        else:  # Tensor cores, fp16/bf16 operands, fp32 accumulation
            acc += tl.dot(a.to(w_ptr.dtype.element_ty), b, out_dtype=tl.float32)
    # NaN/inf in a row of x (fp32 values beyond float16's range round to inf) makes every sum of
    # that row non-finite (inf * w is inf or NaN): the poison is per element, no cross-tile
    # reduction needed. (Finite inputs cannot overflow the
    # fp32 sum here: |x| <= 65504 for fp16, and bf16-range x would need K * |x * w| > 3.4e38.)
    _epilogue_store(acc, ~(tl.abs(acc) <= _FLT_MAX), rm, rn, M, N, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                    HAS_BIAS, ACT, HAS_RES)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _half_tma_kernel(x_desc, w_desc, b_ptr, r_ptr, y_ptr, M, N, K, M_BUCKET, s_rm, s_ym,
                     HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr, DOT_F32: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     FLATTEN: tl.constexpr, NUM_PROGS: tl.constexpr):
    """_half_kernel's math for x already of the weight's type, as a persistent kernel: NUM_PROGS
    programs (one per SM) walk the output tiles in GROUP_M order; the x and weight tiles arrive
    by TMA (tensor descriptors, block [BLOCK_M, BLOCK_K] and [BLOCK_N, BLOCK_K]; rows and columns
    past the edges read as zeros, so a ragged K adds nothing), the epilogue is the same."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_PROGS, flatten=FLATTEN):
        pid_m, pid_n = _tile_mn(tile, num_m, num_n, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for ki in range(k_tiles):
            a = x_desc.load([om, ki * BLOCK_K])
            b = w_desc.load([on, ki * BLOCK_K])
            if DOT_F32:  # the interpreter has no bf16 matmul: the same (already rounded) values in fp32
                acc = tl.dot(a.to(tl.float32), b.to(tl.float32).T, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b.T, acc, out_dtype=tl.float32)
        rm = om + tl.arange(0, BLOCK_M)
        rn = on + tl.arange(0, BLOCK_N)
        _epilogue_store(acc, ~(tl.abs(acc) <= _FLT_MAX), rm, rn, M, N, b_ptr, r_ptr, y_ptr, s_rm, s_ym,
                        HAS_BIAS, ACT, HAS_RES)


@triton.jit(do_not_specialize=["M", "M_BUCKET"])
def _w8a8_tma_kernel(q_desc, w_desc, sa_ptr, zp_ptr, bad_ptr, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, M, N, K, M_BUCKET,
                     s_rm, s_ym, HAS_BIAS: tl.constexpr, ACT: tl.constexpr, HAS_RES: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     FLATTEN: tl.constexpr, NUM_PROGS: tl.constexpr):
    """_w8a8_kernel's math as a persistent kernel fed by TMA (see _half_tma_kernel). Past K the
    descriptors read zeros: the code 0 becomes -128 but meets a zero weight, adding nothing."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for tile in tl.range(tl.program_id(0), num_m * num_n, NUM_PROGS, flatten=FLATTEN):
        pid_m, pid_n = _tile_mn(tile, num_m, num_n, GROUP_M)
        om = pid_m * BLOCK_M
        on = pid_n * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        for ki in range(k_tiles):
            a = q_desc.load([om, ki * BLOCK_K])
            b = w_desc.load([on, ki * BLOCK_K])
            a = (a ^ 0x80).to(tl.int8, bitcast=True)  # q - 128
            acc = tl.dot(a, b.T, acc, out_dtype=tl.int32)
        rm = om + tl.arange(0, BLOCK_M)
        rn = on + tl.arange(0, BLOCK_N)
        rmask = rm < M
        sa = tl.load(sa_ptr + rm, mask=rmask, other=1.0)
        zp = tl.load(zp_ptr + rm, mask=rmask, other=128)
        bad = tl.load(bad_ptr + rm, mask=rmask, other=0)
        _w8a8_epilogue(acc, sa, zp, bad, rm, rn, M, N, sw_ptr, cs_ptr, b_ptr, r_ptr, y_ptr, s_rm, s_ym, HAS_BIAS, ACT,
                       HAS_RES)


# ---------------------------------------------------------------------------------- launchers
# Host cost per call is what small-M serving pays (the kernels take ~10-30 us there), so after
# the first call of a specialization the launchers skip triton's per-call machinery:
#
# - the autotuner runs once per (kernel, M bucket, N, K, device); its pick is kept in _BEST;
# - the kernel is then launched DIRECTLY: the compiled kernel's launcher gets the arguments
#   itself, pointers as ints (no JITFunction.run binding/specialization/cache lookup, no driver
#   pointer query per tensor). The constexpr values are taken from triton's own binder at the
#   first launch of each key and checked against it, so a triton whose internals differ just
#   keeps the normal path (FAST_LAUNCH off, or a key recorded as False). A direct launch needs
#   every pointer 16-byte aligned (the compiled kernel may assume it); other calls take the
#   normal path. Same entry points in triton 3.6 and 3.7: CompiledKernel.run / .function /
#   .packed_metadata and launcher(grid0, grid1, grid2, stream, function, packed_metadata,
#   launch_metadata, enter_hook, exit_hook, *all_args). Profiler launch hooks (triton.knobs)
#   send calls to the normal path.
# - intermediates (codes, scales, flags, split-K workspace) live in a per-(device, stream)
#   scratch buffer instead of 4-5 allocations per call (fresh buffers during CUDA graph capture).
_BEST: dict = {}  # (kernel name, autotune key..., device) -> tuned Config: later calls skip the autotuner
# False: no timing runs, the first config that suits M is used (one compile per specialization
# instead of one per config; the GPU tests that vary constexprs a lot turn tuning off).
AUTOTUNE = os.environ.get("PYPERFCORE_TRITON_AUTOTUNE", "1") not in ("0", "")
FAST_LAUNCH = os.environ.get("PYPERFCORE_TRITON_FAST_LAUNCH", "1") not in ("0", "") and not _INTERPRET
_DIRECT: dict = {}  # launch key -> _Direct, or False (this key always takes triton's normal path)
_SCRATCH: dict = {}  # (device, stream, zeroed) -> persistent int32 buffer
SCRATCH_MAX_BYTES = 64 << 20  # larger intermediates are allocated per call
_knobs = getattr(triton, "knobs", None)
# Why a key keeps triton's normal path (or why a direct launch was refused): filled at record time
# and on refusals, printed by benchmarks/gpu_sweep_quant.py; PYPERFCORE_FAST_LAUNCH_DEBUG=1 also
# prints each reason to stderr when it is first seen.
DIRECT_WHY: dict = {}
_DEBUG = os.environ.get("PYPERFCORE_FAST_LAUNCH_DEBUG", "0") not in ("", "0")


def _why(dkey, reason: str) -> None:
    if DIRECT_WHY.get(dkey) != reason:
        DIRECT_WHY[dkey] = reason
        if _DEBUG:
            import sys
            print(f"pyperfcore fast launch {dkey[:3]}: {reason}", file=sys.stderr)


class _Direct:
    __slots__ = ("run", "function", "packed", "tail", "bm", "bn", "sk", "ptrs")


def _jit_chain(kernel):
    heurs, f = [], kernel
    while not isinstance(f, triton.runtime.jit.JITFunction):
        if isinstance(f, triton.runtime.autotuner.Heuristics):
            heurs.append(f.values)
        f = f.fn
    return f, heurs


def _record(dkey, kernel, compiled, args, kw, meta):
    """Remember how to launch `compiled` directly for later calls with key `dkey`."""
    ptrs = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
    if any(args[i].data_ptr() & 15 for i in ptrs):
        _why(dkey, "not recorded yet: a pointer is not 16-byte aligned (recorded on an aligned call)")
        return
    if dkey[1] != torch.cuda.current_device():
        _why(dkey, "not recorded yet: tensor device is not the current device")
        return
    entry = False
    try:
        jit, heurs = _jit_chain(kernel)
        kw = dict(kw)
        for values in heurs:  # as Heuristics.run computes them
            named = {**dict(zip(jit.arg_names, args)), **kw}
            for name, h in values.items():
                kw[name] = h(named)
        binder = jit.device_caches[torch.cuda.current_device()][-1]
        bound, spec, _ = binder(*args, **kw)
        vals = list(bound.values())
        n = len(args)
        if compiled is None:
            reason = "launch returned no CompiledKernel"
        elif getattr(compiled, "function", None) is None:
            reason = "CompiledKernel.function is None after the launch"
        elif not hasattr(compiled, "packed_metadata"):
            reason = "CompiledKernel has no packed_metadata"
        elif len(vals) != len(spec) or len(vals) != len(jit.arg_names):
            reason = f"binder shape: {len(vals)} values, {len(spec)} specializations, {len(jit.arg_names)} params"
        elif not all(vals[i] is args[i] for i in range(n)):
            reason = "binder reordered or converted the positional arguments"
        elif not all(s[0] == "constexpr" for s in spec[n:]):
            reason = "a keyword argument is not a constexpr: " + repr([s[0] for s in spec[n:]])
        else:
            reason = None
            entry = _Direct()
            entry.run = compiled.run
            entry.function = compiled.function
            entry.packed = compiled.packed_metadata
            entry.tail = tuple(vals[n:])
            entry.bm, entry.bn, entry.sk = meta.get("BLOCK_M", 1), meta.get("BLOCK_N", 1), meta.get("SPLIT_K", 1)
            entry.ptrs = ptrs
    except Exception as e:  # another triton's internals: keep the normal path for this key
        entry, reason = False, f"exception while recording: {type(e).__name__}: {e}"
    _why(dkey, reason or "recorded")
    _DIRECT[dkey] = entry


def _hook_on(h) -> bool:
    # triton 3.5+ keeps the launch hooks as a HookChain (never None: empty .calls when unused);
    # older ones as None or a plain callable.
    if h is None:
        return False
    calls = getattr(h, "calls", None)
    return True if calls is None else bool(calls)


def _direct_ok(dev: int) -> bool:
    # the recorded kernel handle belongs to the device that was current when it was recorded;
    # an active launch hook (profiler) needs triton's launch metadata: normal path then
    if torch._C._cuda_getDevice() != dev:
        return False
    rt = _knobs.runtime if _knobs is not None else None
    return rt is None or not (_hook_on(rt.launch_enter_hook) or _hook_on(rt.launch_exit_hook))


def _fire(ent, g0, g1, g2, stream, args) -> bool:
    """Direct launch; False (nothing launched) when a pointer is not 16-byte aligned, or when this
    entry's launcher refused its arguments once (then the key keeps the normal path)."""
    ptrs = ent.ptrs
    if ptrs is None:
        return False
    a = list(args)
    acc = 0
    for i in ptrs:
        p = a[i]
        if type(p) is not int:
            p = a[i] = p.data_ptr()
        acc |= p
    if acc & 15:
        return False
    try:
        ent.run(g0, g1, g2, stream, ent.function, ent.packed, None, None, None, *a, *ent.tail)
    except (TypeError, ValueError, OverflowError, SystemError) as e:  # argument parsing: nothing launched
        ent.ptrs = None
        for k, v in _DIRECT.items():
            if v is ent:
                _why(k, f"launcher refused the direct arguments: {type(e).__name__}: {e}")
        return False
    return True


def _launch(kernel, key, grid, args, meta, dkey=None):
    cfg = _BEST.get(key)
    if cfg is None:
        if AUTOTUNE:
            kernel[grid](*args, **meta)
            _BEST[key] = kernel.best_config
            return
        cfg = _prune_by_m(kernel.configs, {"M_BUCKET": key[1]})[0]
    kw = {**meta, **cfg.all_kwargs()}
    compiled = kernel.fn[grid(cfg.kwargs)](*args, **kw)
    if dkey is not None and FAST_LAUNCH:
        _record(dkey, kernel, compiled, args, kw, cfg.kwargs)


def _capturing(x: torch.Tensor) -> bool:
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def _scratch(x: torch.Tensor, stream, nbytes: int, zeroed: bool, dev=None):
    """[int32 buffer of >= nbytes on x's device, its size, its address, is_cuda] for this stream's
    intermediates; persistent (zeroed ones are left zeroed by the kernels) except during graph
    capture or above SCRATCH_MAX_BYTES."""
    skey = (x.get_device() if dev is None else dev, stream, zeroed)
    e = _SCRATCH.get(skey)
    if e is not None and e[1] >= nbytes and not (e[3] and torch._C._cuda_isCurrentStreamCapturing()):
        return e
    n = max(4, (nbytes + 3) // 4)
    make = torch.zeros if zeroed else torch.empty
    if nbytes > SCRATCH_MAX_BYTES or _capturing(x):
        buf = make((n,), dtype=torch.int32, device=x.device)
        return [buf, 4 * n, buf.data_ptr(), x.is_cuda]
    buf = make((max(n, 1024, 2 * (0 if e is None else e[1] // 4)),), dtype=torch.int32, device=x.device)
    e = _SCRATCH[skey] = [buf, 4 * buf.numel(), buf.data_ptr(), x.is_cuda]
    return e


_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def _check_rows(x: torch.Tensor, k: int, what: str, floats: bool = False) -> torch.Tensor:
    if x.dim() != 2 or x.shape[1] != k:
        raise ValueError(f"{what} must be [m, {k}], got {tuple(x.shape)}")
    if x.dtype not in (_FLOATS if floats else _FLOATS[:1]):
        raise TypeError(f"{what} must be {'float32, float16 or bfloat16' if floats else 'float32'}, got {x.dtype}")
    return x if (x.shape[1] <= 1 or x.stride(1) == 1) else x.contiguous()


def _raise_if_flagged(bad: torch.Tensor, x: torch.Tensor) -> None:
    # Reading the flag synchronizes; inside CUDA graph capture that is not allowed, so there the
    # check is skipped (the output rows are NaN instead; documented).
    if not _capturing(x) and bool(bad.any()):
        raise ValueError("linear: activations contain NaN or infinity")


def _out_dtype(out_dtype) -> torch.dtype:
    if out_dtype is None:
        return torch.float32
    if out_dtype not in _FLOATS:
        raise TypeError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype!r}")
    return out_dtype


def _a16(v: int) -> int:  # bytes rounded up to 16
    return (v + 15) & ~15


def quantize_activations(x: torch.Tensor, symmetric: bool = False, check_finite: bool = True):
    """Per-token uint8 codes [m, k], scales [m], zero points [m] (int32).

    ValueError on NaN/inf (one synchronization) unless ``check_finite=False``; then use
    :func:`quantize_activations_flagged` to get the per-row flags."""
    q, s, z, bad = quantize_activations_flagged(x, symmetric)
    if check_finite and bad.numel():
        _raise_if_flagged(bad, x)
    return q, s, z


def _act_quant_block(k: int) -> int:
    return max(64, min(4096, triton.next_power_of_2(max(k, 1))))


def quantize_activations_flagged(x: torch.Tensor, symmetric: bool = False):
    """As :func:`quantize_activations` without synchronizing: also returns int32 flags [m], nonzero
    for rows holding NaN/inf (whose codes are meaningless)."""
    m, k = x.shape
    x = _check_rows(x, k, "x", floats=True)
    dev = x.device
    q = torch.empty((m, k), dtype=torch.uint8, device=dev)
    s = torch.empty((m,), dtype=torch.float32, device=dev)
    z = torch.empty((m,), dtype=torch.int32, device=dev)
    bad = torch.empty((m,), dtype=torch.int32, device=dev)
    if m == 0:
        return q, s, z, bad
    _act_quant_kernel[(m,)](x, q, s, z, bad, k, max(x.stride(0), 1), max(q.stride(0), 1), SYMMETRIC=symmetric,
                            BLOCK_K=_act_quant_block(k), ONE_TILE=k <= _act_quant_block(k))
    return q, s, z, bad


def _act_quant_into(x, sxm, m, k, symmetric, q, s, z, bad, dev, stream):
    """The per-token quantization launch of the two-pass path, into given buffers (tensors on the
    normal path, or ints: pointers into the scratch buffer, direct launches only)."""
    dkey = ("aq", dev, k, sxm, bool(symmetric), x.dtype)
    ent = _DIRECT.get(dkey) if FAST_LAUNCH else False
    args = (x, q, s, z, bad, k, sxm, max(k, 1))
    # pointers as ints: the caller is on the direct path and has checked _direct_ok already
    if ent and (type(q) is int or _direct_ok(dev)) and _fire(ent, m, 1, 1, stream, args):
        return True
    if type(q) is int:
        return False  # the caller retries with tensors
    meta = dict(SYMMETRIC=bool(symmetric), BLOCK_K=_act_quant_block(k), ONE_TILE=k <= _act_quant_block(k))
    compiled = _act_quant_kernel[(m,)](*args, **meta)
    if FAST_LAUNCH and ent is None:
        _record(dkey, _act_quant_kernel, compiled, args, meta, {})
    return True


def linear_w8a8(x, qweight, wscale, colsum, bias=None, activation="none", residual=None, symmetric=False,
                check_finite=False, path=None, out_dtype=None):
    """y = act(sa * sw * (q @ w^T - zp * colsum) + bias) + residual for x [m, k] (float32, or
    float16/bfloat16 read as is: the per-token scales come from the values widened to fp32).

    ``out_dtype``: float32 (default), float16 or bfloat16; the fp32 epilogue's result is rounded
    once on store, so a half-precision model needs no conversion kernels around the layer. The
    residual may be of any of those types. ``path``: None (by M: for m <= FUSED_MAX_M ``fused``, or
    on CUDA ``cuda`` where SMALL_M_PATH takes it; else ``two_pass``), ``fused``, ``two_pass``
    (per-token quantization, then the GEMM: the pointer kernel, or for m >= TMA_MIN_M on Hopper
    the persistent TMA kernel when TMA picks it), ``pointer`` / ``tma`` (two-pass with that GEMM;
    ``tma`` raises ValueError where it cannot run) or ``cuda``. Rows of x with NaN/inf give NaN rows; ``check_finite=True`` raises
    instead."""
    n, k = qweight.shape
    x = _check_rows(x, k, "x", floats=True)
    m = x.shape[0]
    y = torch.empty((m, n), dtype=_out_dtype(out_dtype), device=x.device)
    if m == 0 or n == 0:
        return y
    r = None if residual is None else _check_rows(residual, n, "residual", floats=True)
    act = _ACTS[activation]
    mb = 1 << (m - 1).bit_length()
    has_bias, has_res = bias is not None, r is not None
    bias_t = bias if has_bias else y
    res_t = r if has_res else y
    s_rm = r.stride(0) if has_res else 0
    sxm = max(x.stride(0), 1)
    if path is None:
        path = "two_pass" if m > FUSED_MAX_M else "fused"
        if m <= FUSED_MAX_M and x.is_cuda and k and _small_path(
                ("w8a8", x.get_device(), mb, n, k, x.dtype, y.dtype, has_bias, act, has_res, bool(symmetric)), x,
                lambda: _cuda_small_refusal(qweight, None, wscale, colsum, bias),
                lambda p: linear_w8a8(x, qweight, wscale, colsum, bias, activation, r, symmetric, False, p, y.dtype)):
            path = "cuda"
    elif path not in _PATHS:
        raise ValueError(f"path must be None, 'fused', 'two_pass', 'pointer', 'tma' or 'cuda', got {path!r}")
    if path == "cuda":
        flags = _cuda_small(x, qweight, None, wscale, colsum, bias, r, y, m, n, k, sxm, act, symmetric)
        if flags is not None:
            if check_finite:
                _raise_if_flagged(flags[0][flags[1]:flags[1] + m], x)
            return y
        path = "fused"  # operand layouts the CUDA kernel does not take (checked in _cuda_small)
    if k == 0:  # no K loop: the sums are 0 (fused kernel's wrapped loads need K > 0 too)
        path = "two_pass"
    dev = x.get_device()
    stream = torch._C._cuda_getCurrentRawStream(dev) if dev >= 0 else 0  # the only stream query
    s_wn, s_wk = qweight.stride()
    # the direct-launch key: everything the compiled specialization depends on, one flat tuple
    symmetric = bool(symmetric)
    if path == "fused":
        dkey = ("fused", dev, mb, n, k, sxm, symmetric, has_bias, act, has_res, AUTOTUNE, qweight.dtype,
                wscale.dtype, colsum.dtype, bias.dtype if has_bias else None, s_wn, s_wk, s_rm, x.dtype, y.dtype,
                r.dtype if has_res else None)
        ent = _DIRECT.get(dkey) if FAST_LAUNCH else None
        if ent and _direct_ok(dev):
            # scratch: flags [m]; zeroed scratch: split-K workspace [m, n] | tile tickets
            sb = _scratch(x, stream, 4 * m, False, dev)
            bad = ws = cnt = sb[2]
            if ent.sk != 1:
                ws = _scratch(x, stream, _a16(4 * m * n) + 4 * (-(-m // 16)) * (-(-n // 16)), True, dev)[2]
                cnt = ws + _a16(4 * m * n)
            args = (x, qweight, wscale, colsum, bias_t, res_t, y, bad, ws, cnt, m, n, k, mb, sxm, s_wn, s_rm, n)
            if _fire(ent, -(-m // ent.bm), -(-n // ent.bn), ent.sk, stream, args):
                if check_finite:
                    _raise_if_flagged(sb[0][:m], x)
                return y
        bad = torch.empty((m,), dtype=torch.int32, device=x.device)
        key = ("fused", mb, n, k, dev)
        # split-K partial sums and tickets: zero on entry, left zeroed by the kernel
        wsb = _scratch(x, stream, _a16(4 * m * n) + 4 * (-(-m // 16)) * (-(-n // 16)), True, dev)[0]
        ws, cnt = wsb, wsb[_a16(4 * m * n) // 4:]
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"])  # noqa: E731
        _launch(_w8a8_fused_kernel, key, grid,
                (x, qweight, wscale, colsum, bias_t, res_t, y, bad, ws, cnt, m, n, k, mb, sxm, s_wn, s_rm, n),
                dict(SYMMETRIC=bool(symmetric), HAS_BIAS=has_bias, ACT=act, HAS_RES=has_res),
                dkey if ent is None else None)
    else:
        # the GEMM: the pointer kernel, or on Hopper for M >= TMA_MIN_M the persistent TMA one
        tkey = ("w8a8", mb, n, k, dev)
        tcfg = None
        if path == "tma" or (m >= TMA_MIN_M and TMA != "0" and path != "pointer"):
            why = _w8a8_tma_refusal(x, qweight, k, dev)
            if why and path == "tma":
                raise ValueError(f"linear_w8a8 path='tma': {why}")
            if not why:
                tcfg = _tma_state(tkey, path == "tma", _w8a8_tma_kernel_configs, mb, x)
        dkey = ("w8a8", dev, mb, n, k, symmetric, has_bias, act, has_res, AUTOTUNE, qweight.dtype, wscale.dtype,
                colsum.dtype, bias.dtype if has_bias else None, s_wn, s_wk, s_rm, x.dtype, y.dtype,
                r.dtype if has_res else None, id(tcfg))
        timing = tcfg is _UNSET or tcfg is _UNSET_TMA
        ent = _DIRECT.get(dkey) if FAST_LAUNCH and not timing else None
        if ent and _direct_ok(dev):
            # scratch: codes [m, k] | scales [m] | zero points [m] | flags [m], 16-byte aligned pieces
            o_s = _a16(m * k)
            o_z = o_s + _a16(4 * m)
            o_b = o_z + _a16(4 * m)
            sb = _scratch(x, stream, o_b + 4 * m, False, dev)
            base = sb[2]
            if _act_quant_into(x, sxm, m, k, symmetric, base, base + o_s, base + o_z, base + o_b, dev, stream):
                if tcfg is None:
                    args = (base, qweight, base + o_s, base + o_z, base + o_b, wscale, colsum, bias_t, res_t, y,
                            m, n, k, mb, max(k, 1), s_wn, s_rm, n)
                    g0 = -(-m // ent.bm) * -(-n // ent.bn)
                else:
                    args = _w8a8_tma_args(tcfg, _Addr(base, torch.uint8), qweight, base + o_s, base + o_z, base + o_b,
                                          wscale, colsum, bias_t, res_t, y, m, n, k, mb, s_rm)
                    g0 = _tma_grid(tcfg, m, n, dev)
                if _fire(ent, g0, 1, 1, stream, args):
                    if check_finite:
                        _raise_if_flagged(sb[0][o_b // 4:o_b // 4 + m], x)
                    return y
        q = torch.empty((m, k), dtype=torch.uint8, device=x.device)
        sa = torch.empty((m,), dtype=torch.float32, device=x.device)
        zp = torch.empty((m,), dtype=torch.int32, device=x.device)
        bad = torch.empty((m,), dtype=torch.int32, device=x.device)
        _act_quant_into(x, sxm, m, k, symmetric, q, sa, zp, bad, dev, stream)
        grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
        pargs = (q, qweight, sa, zp, bad, wscale, colsum, bias_t, res_t, y, m, n, k, mb, max(k, 1), s_wn, s_rm, n)
        meta = dict(HAS_BIAS=has_bias, ACT=act, HAS_RES=has_res)
        tma_args = (lambda c: _w8a8_tma_args(c, q, qweight, sa, zp, bad, wscale, colsum, bias_t, res_t, y, m, n, k, mb,
                                             s_rm))
        if timing:  # first call of this shape: time the pointer kernel's winner (unless forced) and the TMA configs
            _launch(_w8a8_kernel, tkey, grid, pargs, meta)
            best = _BEST[tkey]
            tcfg = _time_pick(tkey, lambda: _w8a8_kernel.fn[grid(best.kwargs)](*pargs, **meta, **best.all_kwargs()),
                              lambda c: _w8a8_tma_run(c, tma_args(c), meta, dev), _w8a8_tma_kernel_configs, mb, y,
                              exact=True, tma_only=tcfg is _UNSET_TMA)
            dkey = None  # (the next call records its direct launch under the picked key)
        if tcfg is None:
            _launch(_w8a8_kernel, tkey, grid, pargs, meta, dkey if ent is None else None)
        else:
            _w8a8_tma_run(tcfg, tma_args(tcfg), meta, dev, dkey if ent is None else None)
    if check_finite:
        _raise_if_flagged(bad, x)
    return y


def _cuda_mod():
    """pyperfcore._cuda, or None where it was not built (looked up once)."""
    if not _CUDA_MOD:
        from .._runtime import _cuda_module

        _CUDA_MOD.append(_cuda_module())
    return _CUDA_MOD[0]


def _cuda_small_refusal(w, weight, wscale, colsum, bias) -> str | None:
    """Why the CUDA small-M kernels cannot take these operands (None: they can): weight rows with
    unit column stride, contiguous float32 scales / int32 column sums / float32 bias."""
    if w.shape[1] > 1 and w.stride(1) != 1:
        return "weight columns are not contiguous"
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        return "bias is not a contiguous float32 vector"
    if weight is None and (w.dtype != torch.int8 or wscale.dtype != torch.float32 or not wscale.is_contiguous()
                           or colsum.dtype != torch.int32 or not colsum.is_contiguous()):
        return "W8A8 operands are not int8 weight, contiguous float32 scales and int32 column sums"
    return None


_SMALL: dict = {}  # small-M key -> True (the CUDA C++ kernel) or False (Triton): SMALL_M_PATH "auto"'s picks
SMALL_WHY: dict = {}  # small-M key -> the per-call times of the pick, or why the CUDA kernel was left out


def _small_path(skey, x, refusal, call) -> bool:
    """Whether a CUDA call with at most FUSED_MAX_M rows takes the CUDA C++ small-M kernel
    (SMALL_M_PATH; for "auto" the pick of this key, measured on its first call: ``call(path)``
    runs the layer with "cuda" or with the Triton path and returns the output; ``refusal()`` says
    why the CUDA kernel cannot take these operands, or None; both run only when picking)."""
    mode = SMALL_M_PATH
    if mode == "triton":
        return False
    if mode == "cuda":
        return True
    if mode != "auto":
        raise ValueError(f"PYPERFCORE_SMALL_M_PATH must be 'auto', 'triton' or 'cuda', got {mode!r}")
    got = _SMALL.get(skey)
    if got is not None:
        return got
    why = refusal()
    if why:  # operand layouts (not in the key): Triton for this call, no pick recorded
        SMALL_WHY[skey] = f"CUDA kernel cannot take this call: {why}"
        return False
    if _cuda_mod() is None:
        SMALL_WHY[skey] = "pyperfcore._cuda was not built"
        _SMALL[skey] = False
        return False
    if not (AUTOTUNE and _CAN_TIME) or _capturing(x):
        return False  # the measured default; the pick waits for a call that can time
    with torch.cuda.device(x.get_device()):  # (events and launches on x's device; -1: no-op)
        _SMALL[skey] = _small_pick(skey, lambda: call("fused" if skey[0] == "w8a8" else "triton"),
                                   lambda: call("cuda"))
    return _SMALL[skey]


def _call_times(fns, rounds: int = 5, calls: int = 10):
    """(host_ms, device_ms) per call of each fn, medians over `rounds` rounds taken in turn:
    host, the submission cost of `calls` calls back to back (nothing synchronizes them; the
    launch queue does not fill in 10 calls); device, one call timed between CUDA events after
    the L2 cache is flushed (as triton's do_bench flushes it: a layer's weights are not in L2
    when a model runs its other layers in between)."""
    import time

    flush = triton.runtime.driver.active.get_empty_cache_for_benchmark()
    host = [[] for _ in fns]
    dev = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                f()
            host[i].append((time.perf_counter() - t0) * 1e3 / calls)
            flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            f()
            e.record()
            e.synchronize()
            dev[i].append(s.elapsed_time(e))
    med = lambda t: sorted(t)[len(t) // 2]  # noqa: E731
    return [(med(h), med(d)) for h, d in zip(host, dev)]


def _small_pick(skey, run_triton, run_cuda) -> bool:
    """SMALL_M_PATH "auto": True if the CUDA small-M kernel's output agrees with the Triton path's
    (_same_output: the W8A8 INT32 sums are exact, the epilogues' float math may differ by an
    ulp) and it costs less per call; a CUDA kernel that raises or disagrees is never picked.
    A call's cost is max(host submission, cold device time): a model's layers overlap one's host
    work with the previous one's kernels, so whichever is longer sets the pace at these sizes."""
    ref = run_triton()
    try:
        out = run_cuda()
    except Exception as e:  # (a driver or launch error on this GPU: keep Triton, say why)
        SMALL_WHY[skey] = f"CUDA kernel raised {type(e).__name__}: {e}"
        return False
    if not _same_output(out, ref, exact=False):
        SMALL_WHY[skey] = "CUDA kernel's output differs from the Triton kernel's: left out"
        return False
    try:
        (h_tri, d_tri), (h_cu, d_cu) = _call_times([run_triton, run_cuda])
    except Exception as e:  # (timing is a choice, never a failure of the call: keep Triton)
        SMALL_WHY[skey] = f"timing failed, Triton kept: {type(e).__name__}: {e}"
        return False
    SMALL_WHY[skey] = (f"per call (host / device us): triton {h_tri * 1e3:.1f} / {d_tri * 1e3:.1f}, "
                       f"cuda {h_cu * 1e3:.1f} / {d_cu * 1e3:.1f}")
    return max(h_cu, d_cu) < max(h_tri, d_tri)


def _cuda_small(x, qweight, weight, wscale, colsum, bias, r, y, m, n, k, sxm, act, symmetric=False):
    """The CUDA C++ small-M kernels (two launches from one C++ call, no synchronization): W8A8 with
    ``qweight`` (int8) or FP16/BF16 with ``weight``. Returns where this call's per-row NaN flags
    are, (int32 workspace, offset of the m flags), to be read only after the launches in stream
    order (a view is made only when they are read: a slice costs a microsecond a call), or None
    (nothing launched) when an operand is not in the layout they take: weight rows with unit
    column stride, contiguous float32 scales / int32 column sums / float32 bias."""
    if not x.is_cuda:
        raise ValueError("path='cuda' needs CUDA tensors")
    cu = _cuda_mod()
    if cu is None:
        from .._errors import BackendUnavailable

        raise BackendUnavailable("path='cuda': pyperfcore._cuda was not built (PYPERFCORE_CUDA=OFF or no nvcc)")
    if _cuda_small_refusal(qweight if weight is None else weight, weight, wscale, colsum, bias):
        return None
    w = qweight if weight is None else weight
    dev = x.get_device()
    if torch._C._cuda_getDevice() != dev:  # the launches go to the current device: make it x's
        with torch.cuda.device(dev):
            return _cuda_small(x, qweight, weight, wscale, colsum, bias, r, y, m, n, k, sxm, act, symmetric)
    stream = torch._C._cuda_getCurrentRawStream(dev)
    nbytes = cu.w8a8_small_workspace(m, k) if weight is None else cu.half_small_workspace(m, k)
    sb = _scratch(x, stream, nbytes, False, dev)
    has_res = r is not None
    xa = (x.data_ptr(), _CUDA_DT[x.dtype], m, k, sxm)
    tail = (0 if bias is None else bias.data_ptr(), r.data_ptr() if has_res else 0, _CUDA_DT[r.dtype] if has_res else 0,
            r.stride(0) if has_res else 0, y.data_ptr(), _CUDA_DT[y.dtype], n, act)
    if weight is None:
        cu.linear_w8a8_small(*xa, w.data_ptr(), n, max(w.stride(0), 1), wscale.data_ptr(), colsum.data_ptr(), *tail,
                             bool(symmetric), sb[2], sb[1], stream)
    else:
        cu.linear_half_small(*xa, w.data_ptr(), _CUDA_DT[w.dtype], n, max(w.stride(0), 1), *tail, sb[2], sb[1], stream)
    return sb[0], (nbytes - _a16(4 * m)) // 4  # the per-row NaN flags end the workspace (int32 [m])


def linear_half(x, weight, bias=None, activation="none", residual=None, check_finite=False, out_dtype=None,
                path=None):
    """y = act(x @ w^T + bias) + residual with float16/bfloat16 weight [n, k]: x (float32, or
    already of the weight's type) is rounded to the weight's type, products on Tensor cores, fp32
    accumulation and epilogue. ``out_dtype``: float32 (default), float16 or bfloat16, rounded once
    on store (cuBLAS' fp16 GEMM writes fp16 too); the residual may be of any of those types. Rows
    of x with NaN/inf (or, for float16, |x| > 65504) give NaN rows; ``check_finite=True`` raises
    instead. ``path``: None (Triton; for m <= FUSED_MAX_M on CUDA the CUDA C++ small-M kernel where
    SMALL_M_PATH takes it), "triton" (the pointer kernel, or for m >= TMA_MIN_M on Hopper with x
    of the weight's type the persistent TMA kernel when TMA picks it), "pointer", "tma"
    (ValueError where it cannot run) or "cuda"."""
    n, k = weight.shape
    wdt = weight.dtype
    if wdt is not torch.float16 and wdt is not torch.bfloat16:
        raise TypeError(f"weight must be float16 or bfloat16, got {wdt}")
    if x.dtype is wdt and x.dim() == 2 and x.shape[1] == k:
        x = x if (k <= 1 or x.stride(1) == 1) else x.contiguous()  # already rounded: read as is
    else:
        x = _check_rows(x, k, "x", floats=True)
    m = x.shape[0]
    if check_finite and m and not _capturing(x):
        limit = 65504.0 if wdt == torch.float16 else 3.4028234663852886e38
        if not bool((x.abs() <= limit).all()):  # NaN compares false
            raise ValueError("linear: activations contain NaN or infinity"
                             + (" (or values beyond float16's range)" if wdt == torch.float16 else ""))
    y = torch.empty((m, n), dtype=_out_dtype(out_dtype), device=x.device)
    if m == 0 or n == 0:
        return y
    r = None if residual is None else _check_rows(residual, n, "residual", floats=True)
    has_bias, has_res = bias is not None, r is not None
    mb = 1 << (m - 1).bit_length()
    sxm = max(x.stride(0), 1)
    s_rm = r.stride(0) if has_res else 0
    dev = x.get_device()
    act = _ACTS[activation]
    if path is None:
        path = "triton"
        if m <= FUSED_MAX_M and x.is_cuda and _small_path(
                ("half", dev, mb, n, k, x.dtype, wdt, y.dtype, has_bias, act, has_res), x,
                lambda: _cuda_small_refusal(weight, weight, None, None, bias),
                lambda p: linear_half(x, weight, bias, activation, r, False, y.dtype, p)):
            path = "cuda"
    elif path not in ("triton", "pointer", "tma", "cuda"):
        raise ValueError(f"path must be None, 'triton', 'pointer', 'tma' or 'cuda', got {path!r}")
    if path == "cuda" and _cuda_small(x, None, weight, None, None, bias, r, y, m, n, k, sxm, act) is not None:
        return y  # (a NaN row is NaN; check_finite raised above)
    meta = dict(HAS_BIAS=has_bias, ACT=act, HAS_RES=has_res, DOT_F32=_INTERPRET and wdt == torch.bfloat16)
    bptr, rptr = bias if has_bias else y, r if has_res else y
    if path == "tma":
        why = _tma_refusal(x, weight, dev)
        if why:
            raise ValueError(f"linear_half path='tma': {why}")
    if path == "tma" or (path == "triton" and m >= TMA_MIN_M and TMA != "0" and not _tma_refusal(x, weight, dev)):
        tkey = ("half", mb, n, k, dev, wdt)
        pick = _half_pick(tkey, path == "tma", x, weight, bptr, rptr, y, m, n, k, mb, sxm, s_rm, meta)
        if pick is not None:
            _half_tma_run(pick, x, weight, bptr, rptr, y, m, n, k, mb, s_rm, meta,
                          ("half_tma", dev, mb, n, k, sxm, wdt, weight.stride(0), bias.dtype if has_bias else None,
                           act, has_res, s_rm, y.dtype, r.dtype if has_res else None, id(pick)))
            return y
    s_wn, s_wk = weight.stride()
    args = (x, weight, bptr, rptr, y, m, n, k, mb, sxm, s_wn, s_rm, n)
    dkey = ("half", dev, mb, n, k, sxm, x.dtype, wdt, s_wk, bias.dtype if has_bias else None, act,
            has_res, s_rm, AUTOTUNE, y.dtype, r.dtype if has_res else None)
    ent = _DIRECT.get(dkey) if FAST_LAUNCH else None
    if ent and _direct_ok(dev) and _fire(ent, -(-m // ent.bm) * -(-n // ent.bn), 1, 1,
                                         torch._C._cuda_getCurrentRawStream(dev) if dev >= 0 else 0, args):
        return y
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    _launch(_half_kernel, ("half", mb, n, k, dev, wdt), grid, args, meta, dkey if ent is None else None)
    return y


# ------------------------------------------------------------------------- FP16/BF16 TMA path
_PICK: dict = {}  # ("half"|"w8a8", M bucket, N, K, device[, dtype]) -> TMA Config, or None (pointer kernel)
_SMS: dict = {}  # device -> (SM count, compute capability major)


def _sm_info(dev: int):
    """(programs of a persistent launch, capability major) for a device; (3, 9) for CPU tensors
    (the interpreter: a few programs, so that each walks several tiles)."""
    got = _SMS.get(dev)
    if got is None:
        if dev < 0:
            return 3, 9
        props = torch.cuda.get_device_properties(dev)
        got = _SMS[dev] = (props.multi_processor_count, props.major)
    return got


def _tma_refusal(x, weight, dev) -> str | None:
    """Why the TMA kernel cannot take this call (None: it can)."""
    if x.dtype is not weight.dtype:
        return f"x must already be of the weight's type ({weight.dtype}), got {x.dtype}"
    es = x.element_size()
    if x.shape[1] > 1 and (x.stride(1) != 1 or weight.stride(1) != 1):
        return "x and the weight need unit column strides"
    if (x.stride(0) * es) % 16 or (weight.stride(0) * es) % 16 or x.data_ptr() % 16 or weight.data_ptr() % 16:
        return "TMA needs 16-byte aligned bases and row strides (K a multiple of 8 for contiguous rows)"
    if x.is_cuda:
        if _sm_info(dev)[1] < 9:
            return "TMA needs a Hopper or later GPU (compute capability 9.0+)"
    elif not _INTERPRET:
        return "CPU tensors run only under TRITON_INTERPRET=1"
    return None


def _tma_prune(configs, mb: int):
    keep = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, mb)]
    if mb >= 1024:
        keep = [c for c in keep if c.kwargs["BLOCK_M"] >= 128] or keep
    return keep or configs[:1]


def _half_tma_args(cfg, x, weight, b, r, y, m, n, k, mb, s_rm):
    from triton.tools.tensor_descriptor import TensorDescriptor
    bm, bn, bk = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"]
    xd = TensorDescriptor(x, [m, k], [x.stride(0), 1], [bm, bk])
    wd = TensorDescriptor(weight, [n, k], [weight.stride(0), 1], [bn, bk])
    return (xd, wd, b, r, y, m, n, k, mb, s_rm, n)


def _half_tma_run(cfg, x, weight, b, r, y, m, n, k, mb, s_rm, meta, dkey=None):
    dev = x.get_device()
    nprog = _sm_info(dev)[0]
    args = _half_tma_args(cfg, x, weight, b, r, y, m, n, k, mb, s_rm)
    g0 = min(nprog, triton.cdiv(m, cfg.kwargs["BLOCK_M"]) * triton.cdiv(n, cfg.kwargs["BLOCK_N"]))
    ent = _DIRECT.get(dkey) if FAST_LAUNCH and dkey is not None else None
    if ent and _direct_ok(dev) and _fire(ent, g0, 1, 1, torch._C._cuda_getCurrentRawStream(dev), args):
        return
    kw = {**meta, "NUM_PROGS": nprog, **cfg.all_kwargs()}
    compiled = _half_tma_kernel[(g0,)](*args, **kw)
    if ent is None and dkey is not None and FAST_LAUNCH:
        _record(dkey, _half_tma_kernel, compiled, args, kw, cfg.kwargs)


_UNSET = object()  # _tma_state: time the pointer kernel and the TMA configs on this call
_UNSET_TMA = object()  # _tma_state: TMA forced; time the TMA configs on this call
_FORCED: dict = {}  # like _PICK, for forced TMA (path="tma" or TMA "1"): the fastest TMA config


def _tma_state(tkey, force, configs, mb, x):
    """The TMA config a shape runs with, None for the pointer kernel, or a sentinel when this
    call should time the candidates (autotuning on, no pick yet for this key): _UNSET (TMA
    "auto": the pointer kernel is a candidate) or _UNSET_TMA (TMA forced: only TMA configs).
    Without timing, forced TMA takes the first config that suits M."""
    timing = AUTOTUNE and _CAN_TIME and not _capturing(x)
    if force or TMA == "1":
        got = _PICK.get(tkey)
        if got is None:
            got = _FORCED.get(tkey)
        if got is not None:
            return got
        return _UNSET_TMA if timing else _tma_prune(configs, mb)[0]
    if tkey in _PICK:
        return _PICK[tkey]
    return _UNSET if timing else None  # (no timing: the pointer kernel, the measured default)


def _same_output(y, ref, exact: bool):
    """Whether a candidate's output y agrees with the pointer kernel's ref: the same NaN rows and,
    where finite, the same bits (W8A8: exact INT32 sums, shared epilogue) or agreement within
    float32 summation-order error plus one rounding of y's type (FP16/BF16)."""
    nan = torch.isnan(ref)
    if not torch.equal(torch.isnan(y), nan):
        return False
    a, b = y.float().masked_fill(nan, 0.0), ref.float().masked_fill(nan, 0.0)
    if exact:
        return torch.equal(a, b)
    tol = 2.0 ** -6 if y.dtype is torch.bfloat16 else 2.0 ** -9  # two units of fp16/bf16 rounding
    return bool(((a - b).abs() <= tol * b.abs() + 1e-3 * max(1.0, float(b.abs().max()))).all())


def _time_pick(tkey, run_pointer, run_tma, configs, mb, y, exact, tma_only=False):
    """Time the pointer kernel's tuned winner (unless tma_only) and each TMA config that suits M
    (same do_bench settings as the autotuner), keep the fastest for tkey. A TMA config is a
    candidate only if it builds and its output on this call agrees with the pointer kernel's
    (_same_output): a config the GPU or triton gets wrong is never picked. TMA_WHY says why a
    config was left out; forced TMA with no candidate left raises."""
    run_pointer()
    ref = y.clone()
    timed = [] if tma_only else [(_bench_fast(run_pointer, None), None)]
    for c in _tma_prune(configs, mb):
        try:
            y.fill_(0.0)
            run_tma(c)
            if not _same_output(y, ref, exact):
                TMA_WHY[(tkey, str(c))] = "output differs from the pointer kernel's: left out"
                continue
            timed.append((_bench_fast(lambda c=c: run_tma(c), None), c))
        except Exception as e:  # a config this GPU or triton cannot build: skip it, keep the others
            TMA_WHY[(tkey, str(c))] = f"{type(e).__name__}: {e}"
    if not timed:
        run_pointer()  # (y stays right for a caller that catches this)
        raise RuntimeError(f"TMA forced for {tkey[:4]}, but no TMA config built and agreed with the pointer "
                           f"kernel: {[v for (key, _), v in TMA_WHY.items() if key == tkey]}")
    pick = min(timed, key=lambda t: t[0])[1]
    (_FORCED if tma_only else _PICK)[tkey] = pick
    return pick


def _half_pick(tkey, force, x, weight, b, r, y, m, n, k, mb, sxm, s_rm, meta):
    """The TMA config this FP16/BF16 shape runs with, or None for the pointer kernel."""
    st = _tma_state(tkey, force, _half_tma_kernel_configs, mb, x)
    if st is not _UNSET and st is not _UNSET_TMA:
        return st
    args = (x, weight, b, r, y, m, n, k, mb, sxm, weight.stride(0), s_rm, n)
    grid = lambda c: (triton.cdiv(m, c["BLOCK_M"]) * triton.cdiv(n, c["BLOCK_N"]),)  # noqa: E731
    _launch(_half_kernel, tkey, grid, args, meta)  # tunes the pointer kernel (once per key)
    best = _BEST[tkey]
    return _time_pick(tkey, lambda: _half_kernel.fn[grid(best.kwargs)](*args, **meta, **best.all_kwargs()),
                      lambda c: _half_tma_run(c, x, weight, b, r, y, m, n, k, mb, s_rm, meta),
                      _half_tma_kernel_configs, mb, y, exact=False, tma_only=st is _UNSET_TMA)


# ------------------------------------------------------------------------------ W8A8 TMA path
class _Addr:
    """A device address with an element type: all a TensorDescriptor needs of its base, for the
    direct path's codes in the scratch buffer (ints there, not tensors)."""
    __slots__ = ("ptr", "dtype")

    def __init__(self, ptr: int, dtype):
        self.ptr, self.dtype = ptr, dtype

    def data_ptr(self) -> int:
        return self.ptr


def _w8a8_tma_refusal(x, qweight, k, dev) -> str | None:
    """Why the W8A8 TMA GEMM cannot take this call (None: it can). Its codes are [m, k] rows."""
    if k == 0 or k % 16 or (k > 1 and qweight.stride(1) != 1) or qweight.stride(0) % 16 or qweight.data_ptr() % 16:
        return "TMA needs K a multiple of 16 and 16-byte aligned weight rows"
    if x.is_cuda:
        if _sm_info(dev)[1] < 9:
            return "TMA needs a Hopper or later GPU (compute capability 9.0+)"
    elif not _INTERPRET:
        return "CPU tensors run only under TRITON_INTERPRET=1"
    return None


def _w8a8_tma_args(cfg, q, qweight, sa, zp, bad, sw, cs, b, r, y, m, n, k, mb, s_rm):
    from triton.tools.tensor_descriptor import TensorDescriptor
    bm, bn, bk = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"]
    qd = TensorDescriptor(q, [m, k], [k, 1], [bm, bk])
    wd = TensorDescriptor(qweight, [n, k], [qweight.stride(0), 1], [bn, bk])
    return (qd, wd, sa, zp, bad, sw, cs, b, r, y, m, n, k, mb, s_rm, n)


def _tma_grid(cfg, m, n, dev) -> int:
    return min(_sm_info(dev)[0], triton.cdiv(m, cfg.kwargs["BLOCK_M"]) * triton.cdiv(n, cfg.kwargs["BLOCK_N"]))


def _w8a8_tma_run(cfg, args, meta, dev, dkey=None):
    kw = {**meta, "NUM_PROGS": _sm_info(dev)[0], **cfg.all_kwargs()}
    compiled = _w8a8_tma_kernel[(_tma_grid(cfg, args[10], args[11], dev),)](*args, **kw)
    if dkey is not None and FAST_LAUNCH:
        _record(dkey, _w8a8_tma_kernel, compiled, args, kw, cfg.kwargs)


TMA_WHY: dict = {}  # (tune key, config) -> why a TMA config was skipped while picking
_CAN_TIME = not _INTERPRET  # the interpreter cannot time kernels
_half_tma_kernel_configs = _half_tma_configs()
_w8a8_tma_kernel_configs = _w8a8_tma_configs()
