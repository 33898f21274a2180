"""Triton kernels of the fused pre/post-processing ops (``pyperfcore.prepost``).

- ``preprocess_batch``: uint8 NHWC batch -> separable resize by tap tables (both the Pillow and
  the OpenCV bilinear semantics: the host computes the taps) -> crop -> channel order ->
  ``(x - mean) * inv_std`` -> any output strides (NCHW / NHWC / a caller's ``out``) -> dtype.
- ``topk_rows``: top-k of each row (descending, ties by lower index) with full-softmax
  probabilities, one program per row.
- ``softmax_rows`` (softmax / log-softmax), ``sigmoid_threshold``.
- ``l2_normalize`` and ``compress_embeddings`` (int8, one scale per row): the sum of squares in
  the CPU backend's float32 order (16 running sums over 16-element chunks, the tail, then the
  16 sums), launched without multiply-add fusion, so results equal the CPU's bit for bit.

NaN / infinity: ``topk_rows``, ``softmax_rows``, ``l2_normalize`` and ``compress_embeddings``
poison the affected rows (NaN values, index -1; NaN scale and zero codes) and, only when the
caller asks (``check``), also store per-row flags the launcher reads back, raising ValueError
(one synchronization). ``sigmoid_threshold`` always checks: a bool mask cannot carry a poison.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _check_interpreter

_check_interpreter()

_INF = tl.constexpr(float("inf"))
_FLT_MAX = tl.constexpr(3.4028234663852886e38)
MAX_TOPK_CLASSES = 32768  # one program holds a whole row in registers


@triton.jit
def _rne(v):
    # Round half to even, exact for |v| <= 2**22.
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)


_CONSTS: dict[tuple, torch.Tensor] = {}


def _const(device: torch.device, dtype: torch.dtype, value: float) -> torch.Tensor:
    """A cached one-element tensor (dummy pointer arguments, the unit scale): creating one per
    call would cost an allocation and a fill kernel on the GPU. Never written by the kernels."""
    key = (str(device), dtype, value)
    t = _CONSTS.get(key)
    if t is None:
        t = _CONSTS[key] = torch.full((1,), value, dtype=dtype, device=device)
    return t


# ---------------------------------------------------------------- images
@triton.jit
def _preprocess_kernel(
    x_ptr, out_ptr, M0, M1, M2, K0, K1, K2,
    ys_ptr, yw_ptr, xs_ptr, xw_ptr,
    H, W, OH, OW, TOP, LEFT, TY, TX,
    xs_n, xs_h, xs_w, xs_c, os_n, os_c, os_h, os_w, out_scale,
    C: tl.constexpr, SWAP: tl.constexpr, RESIZE: tl.constexpr, KIND: tl.constexpr, BLOCK: tl.constexpr,
    TXP: tl.constexpr,
):
    # One program: BLOCK output pixels of row y of image i, every channel. KIND 0 stores the
    # float value converted to the output's element type (f32 / f16, round to nearest even),
    # 1 int8 (v / scale), 2 uint8, 3 bfloat16 bits (into an int16 view; rounded to nearest even
    # here, because the interpreter's own bfloat16 cast truncates).
    row = tl.program_id(0).to(tl.int64)
    i = row // OH
    y = row % OH
    xo = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    m = xo < OW
    img = x_ptr + i * xs_n
    if RESIZE:
        # Tap tables of the crop window: start index and zero-padded weights per output index.
        # The horizontal taps of all BLOCK pixels form one [BLOCK, TXP] tile, loaded once.
        y0 = tl.load(ys_ptr + y).to(tl.int64)
        x0 = tl.load(xs_ptr + xo, mask=m, other=0).to(tl.int64)
        jx = tl.arange(0, TXP).to(tl.int64)
        tm = m[:, None] & (jx[None, :] < TX)
        wx = tl.load(xw_ptr + xo[:, None] * TX + jx[None, :], mask=tm, other=0.0)
        sx = tl.minimum(x0[:, None] + jx[None, :], W - 1)
    for c in tl.static_range(C):
        if SWAP:
            sc = 2 - c
        else:
            sc = c
        if RESIZE:
            # Horizontal pass per source row, then the vertical weights (the CPU's order).
            acc = tl.zeros([BLOCK], dtype=tl.float32)
            for jy in range(0, TY):
                wy = tl.load(yw_ptr + y * TY + jy)
                sy = tl.minimum(y0 + jy, H - 1)
                px = tl.load(img + sy * xs_h + sx * xs_w + sc * xs_c, mask=tm, other=0).to(tl.float32)
                acc += wy * tl.sum(wx * px, axis=1)
        else:
            acc = tl.load(img + (TOP + y) * xs_h + (LEFT + xo) * xs_w + sc * xs_c, mask=m, other=0).to(tl.float32)
        if c == 0:
            v = (acc - M0) * K0
        elif c == 1:
            v = (acc - M1) * K1
        else:
            v = (acc - M2) * K2
        _store_out(out_ptr, out_ptr + i * os_n + c * os_c + y * os_h + xo * os_w, v, m, out_scale, KIND)


@triton.jit
def _store_out(out_ptr, dst, v, m, out_scale, KIND: tl.constexpr):
    # KIND 0: the output's float type (f32 / f16, round to nearest even), 1 int8 (v / scale),
    # 2 uint8, 3 bfloat16 bits into an int16 view.
    if KIND == 0:
        tl.store(dst, v.to(out_ptr.dtype.element_ty), mask=m)
    elif KIND == 1:
        q = tl.minimum(tl.maximum(tl.math.div_rn(v, out_scale), -127.0), 127.0)
        tl.store(dst, _rne(q).to(tl.int8), mask=m)
    elif KIND == 2:
        q = tl.minimum(tl.maximum(v, 0.0), 255.0)
        tl.store(dst, _rne(q).to(tl.uint8), mask=m)
    else:
        b = v.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        tl.store(dst, b.to(tl.uint16).to(tl.int16, bitcast=True), mask=m)


@triton.jit
def _normalize_flat_kernel(x_ptr, out_ptr, M0, M1, M2, K0, K1, K2, HW, xs_n, os_n, os_c, out_scale,
                           C: tl.constexpr, SWAP: tl.constexpr, KIND: tl.constexpr, BLOCK: tl.constexpr):
    # No resize or crop, packed HWC image -> contiguous planes: BLOCK pixels of image i per
    # program; the channel loads read the same cache lines, each plane's store is contiguous.
    i = tl.program_id(1).to(tl.int64)
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    m = p < HW
    src = x_ptr + i * xs_n + p * C
    for c in tl.static_range(C):
        if SWAP:
            sc = 2 - c
        else:
            sc = c
        x = tl.load(src + sc, mask=m, other=0).to(tl.float32)
        if c == 0:
            v = (x - M0) * K0
        elif c == 1:
            v = (x - M1) * K1
        else:
            v = (x - M2) * K2
        _store_out(out_ptr, out_ptr + i * os_n + c * os_c + p, v, m, out_scale, KIND)


def preprocess_batch(x: torch.Tensor, out: torch.Tensor, out_hw: tuple[int, int], out_strides: tuple[int, int, int, int],
                     mean: list[float], inv_std: list[float],
                     taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None,
                     top: int, left: int, swap: bool, kind: int, out_scale: float) -> torch.Tensor:
    """Fill ``out`` (an output window of ``out_hw`` pixels) from the uint8 [N, H, W, C] tensor ``x``.

    ``out_strides`` are the (n, c, h, w) element strides of ``out``. ``taps`` is None (no resize:
    the window starts at top/left) or (y_start int32 [OH], y_weights f32 [OH, TY], x_start int32
    [OW], x_weights f32 [OW, TX]) of the crop window, all on x's device; weights past a tap's
    count are 0.
    """
    n, h, w, c = x.shape
    oh, ow = out_hw
    if out.dtype == torch.bfloat16:
        out, kind = out.view(torch.int16), 3
    s_n, s_c, s_h, s_w = out_strides
    if n == 0 or oh == 0 or ow == 0:
        return out
    mk = (list(mean) + [0.0] * 3)[:3] + (list(inv_std) + [1.0] * 3)[:3]
    xsn, xsh, xsw, xsc = x.stride()
    if taps is None and top == 0 and left == 0 and (oh, ow) == (h, w) and xsc == 1 and xsw == c and xsh == w * c \
            and s_w == 1 and s_h == ow and n <= 65535:
        blk = 1024
        _normalize_flat_kernel[(triton.cdiv(h * w, blk), n)](
            x, out, *mk, h * w, xsn, s_n, s_c, float(out_scale), C=c, SWAP=bool(swap), KIND=kind, BLOCK=blk)
        return out
    block = max(64, min(256 if taps is None else 128, triton.next_power_of_2(ow)))
    grid = (n * oh, triton.cdiv(ow, block))
    if taps is None:
        dummy_i, dummy_f = _const(x.device, torch.int32, 0), _const(x.device, torch.float32, 0.0)
        ys, yw, xs, xw, ty, tx = dummy_i, dummy_f, dummy_i, dummy_f, 1, 1
    else:
        ys, yw, xs, xw = taps
        ty, tx = yw.shape[1], xw.shape[1]
    _preprocess_kernel[grid](
        x, out, *(list(mean) + [0.0] * 3)[:3], *(list(inv_std) + [1.0] * 3)[:3], ys, yw, xs, xw,
        h, w, oh, ow, top, left, ty, tx,
        xsn, xsh, xsw, xsc, s_n, s_c, s_h, s_w, float(out_scale),
        C=c, SWAP=bool(swap), RESIZE=taps is not None, KIND=kind, BLOCK=block, TXP=max(2, triton.next_power_of_2(tx)),
    )
    return out


# ---------------------------------------------------------------- classification
@triton.jit
def _load_row(x_ptr, s_ptr, r, s_row, N, offs, INT8: tl.constexpr, PER_CLASS: tl.constexpr):
    m = offs < N
    x = tl.load(x_ptr + r * s_row + offs, mask=m, other=0).to(tl.float32)
    if INT8:
        if PER_CLASS:
            x = x * tl.load(s_ptr + offs, mask=m, other=1.0)
        else:
            x = x * tl.load(s_ptr)
    return x, m


@triton.jit
def _bad_code(x, m, SOFTMAX: tl.constexpr):
    # 1 NaN, 2 +inf, 3 a row of -inf (softmax only), else 0.
    nan = tl.max(tl.where(m & (x != x), 1, 0), axis=0)
    pinf = tl.max(tl.where(m & (x == _INF), 1, 0), axis=0)
    code = tl.where(nan > 0, 1, tl.where(pinf > 0, 2, 0))
    if SOFTMAX:
        allneg = tl.max(tl.where(m & (x > -_INF), 1, 0), axis=0) == 0
        code = tl.where((code == 0) & allneg, 3, code)
    return code


@triton.jit
def _topk_kernel(x_ptr, s_ptr, v_ptr, i_ptr, bad_ptr, N, s_row, K,
                 SOFTMAX: tl.constexpr, INT8: tl.constexpr, PER_CLASS: tl.constexpr, BLOCK: tl.constexpr,
                 CHECK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    x, m = _load_row(x_ptr, s_ptr, r, s_row, N, offs, INT8, PER_CLASS)
    x = tl.where(m, x, -_INF)
    code = _bad_code(x, m, SOFTMAX)
    if CHECK:
        tl.store(bad_ptr + r, code)
    poison = code != 0  # the row's results become NaN / -1
    mx = tl.max(x, axis=0)
    lse = mx
    if SOFTMAX:
        lse = mx + tl.log(tl.sum(tl.exp(x - mx), axis=0))
    # Selection without a "taken" mask: the next element is the best one strictly after the
    # previous pick in the order (value descending, index ascending).
    pv = tl.max(tl.full([BLOCK], float("inf"), tl.float32), axis=0)
    pi = tl.min(tl.full([BLOCK], -1, tl.int32), axis=0)
    for j in range(0, K):
        cand = m & ((x < pv) | ((x == pv) & (offs > pi)))
        v = tl.max(tl.where(cand, x, -_INF), axis=0)
        idx = tl.min(tl.where(cand & (x == v), offs, BLOCK), axis=0)
        if SOFTMAX:
            outv = tl.exp(v - lse)
        else:
            outv = v
        tl.store(v_ptr + r * K + j, tl.where(poison, float("nan"), outv))
        tl.store(i_ptr + r * K + j, tl.where(poison, -1, idx.to(tl.int64)))
        pv = v
        pi = idx


@triton.jit
def _softmax_kernel(x_ptr, s_ptr, out_ptr, bad_ptr, N, s_row,
                    LOG: tl.constexpr, INT8: tl.constexpr, PER_CLASS: tl.constexpr, BLOCK: tl.constexpr,
                    CHECK: tl.constexpr):
    # Any row length: a max pass, a sum-of-exp pass and the write pass over BLOCK-wide chunks.
    r = tl.program_id(0).to(tl.int64)
    base = tl.arange(0, BLOCK)
    mv = tl.full([BLOCK], float("-inf"), tl.float32)
    flags = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, N, BLOCK):
        x, m = _load_row(x_ptr, s_ptr, r, s_row, N, start + base, INT8, PER_CLASS)
        flags = tl.maximum(flags, tl.where(m & (x != x), 4, tl.where(m & (x == _INF), 2, 0)))
        mv = tl.maximum(mv, tl.where(m, x, -_INF))
    mx = tl.max(mv, axis=0)
    f = tl.max(flags, axis=0)
    code = tl.where(f >= 4, 1, tl.where(f >= 2, 2, tl.where(mx == -_INF, 3, 0)))
    if CHECK:
        tl.store(bad_ptr + r, code)
    poison = code != 0  # the whole row becomes NaN
    sv = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, N, BLOCK):
        x, m = _load_row(x_ptr, s_ptr, r, s_row, N, start + base, INT8, PER_CLASS)
        sv += tl.where(m, tl.exp(x - mx), 0.0)
    s = tl.sum(sv, axis=0)
    lse = mx + tl.log(s)
    for start in range(0, N, BLOCK):
        offs = start + base
        x, m = _load_row(x_ptr, s_ptr, r, s_row, N, offs, INT8, PER_CLASS)
        if LOG:
            y = x - lse
        else:
            y = tl.exp(x - mx) / s
        tl.store(out_ptr + r * N + offs, tl.where(poison, float("nan"), y), mask=m)


@triton.jit
def _sigmoid_threshold_kernel(x_ptr, s_ptr, out_ptr, bad_ptr, N, s_row, T,
                              INT8: tl.constexpr, PER_CLASS: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    b = tl.program_id(1)
    offs = b * BLOCK + tl.arange(0, BLOCK)
    x, m = _load_row(x_ptr, s_ptr, r, s_row, N, offs, INT8, PER_CLASS)
    tl.store(bad_ptr + r * tl.num_programs(1) + b, tl.max(tl.where(m & (x != x), 1, 0), axis=0))
    tl.store(out_ptr + r * N + offs, (x > T).to(tl.uint8), mask=m)


@triton.jit
def _embed_kernel(x_ptr, out_ptr, q_ptr, sc_ptr, bad_ptr, R, N, s_row, eps,
                  NORMALIZE: tl.constexpr, L2: tl.constexpr, QUANT: tl.constexpr, ROWS: tl.constexpr,
                  BLOCK: tl.constexpr, CHECK: tl.constexpr):
    # ROWS rows per program. Sum of squares in the CPU order (see the module docstring), then
    # d = max(sqrt(ss), eps); L2 stores x / d; QUANT stores scale = max|v| / 127 (1 for a zero
    # row) and q = clip(rne(v / scale), -127, 127) with v = x / d (NORMALIZE) or x.
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS).to(tl.int64)
    rm = rows < R
    base = x_ptr + rows * s_row
    j16 = tl.arange(0, 16)
    acc = tl.zeros([ROWS, 16], dtype=tl.float32)
    bad = tl.zeros([ROWS], dtype=tl.int32)
    nfull = (N // 16) * 16
    for start in range(0, nfull, 16):
        x = tl.load(base[:, None] + start + j16[None, :], mask=rm[:, None], other=0.0)
        bad = tl.maximum(bad, tl.max(tl.where(tl.abs(x) <= _FLT_MAX, 0, 1), axis=1))
        acc += x * x
    s = tl.zeros([ROWS], dtype=tl.float32)
    for i in range(nfull, N):
        x = tl.load(base + i, mask=rm, other=0.0)
        bad = tl.maximum(bad, tl.where(tl.abs(x) <= _FLT_MAX, 0, 1))
        s += x * x
    for j in tl.static_range(16):
        s += tl.sum(tl.where(j16[None, :] == j, acc, 0.0), axis=1)  # one term each: exact
    if CHECK:
        tl.store(bad_ptr + rows, bad, mask=rm)
    poison = bad != 0  # such rows: out NaN, scale NaN, q 0
    sq = tl.sqrt_rn(s)
    d = tl.where(sq < eps, eps, sq)
    cols = tl.arange(0, BLOCK)
    if L2:
        for start in range(0, N, BLOCK):
            offs = start + cols
            m = rm[:, None] & (offs[None, :] < N)
            x = tl.load(base[:, None] + offs[None, :], mask=m, other=0.0)
            y = tl.where(poison[:, None], float("nan"), tl.math.div_rn(x, d[:, None]))
            tl.store(out_ptr + rows[:, None] * N + offs[None, :], y, mask=m)
    if QUANT:
        amax = tl.zeros([ROWS], dtype=tl.float32)
        for start in range(0, N, BLOCK):
            offs = start + cols
            m = rm[:, None] & (offs[None, :] < N)
            v = tl.load(base[:, None] + offs[None, :], mask=m, other=0.0)
            if NORMALIZE:
                v = tl.math.div_rn(v, d[:, None])
            amax = tl.maximum(amax, tl.max(tl.abs(v), axis=1))
        sc = tl.where(amax > 0.0, tl.math.div_rn(amax, tl.full([ROWS], 127.0, tl.float32)), 1.0)
        tl.store(sc_ptr + rows, tl.where(poison, float("nan"), sc), mask=rm)
        for start in range(0, N, BLOCK):
            offs = start + cols
            m = rm[:, None] & (offs[None, :] < N)
            v = tl.load(base[:, None] + offs[None, :], mask=m, other=0.0)
            if NORMALIZE:
                v = tl.math.div_rn(v, d[:, None])
            t = tl.minimum(tl.maximum(tl.math.div_rn(v, sc[:, None]), -127.0), 127.0)
            qv = tl.where(poison[:, None], 0.0, _rne(t))
            tl.store(q_ptr + rows[:, None] * N + offs[None, :], qv.to(tl.int8), mask=m)


_BAD = {1: "logits contain NaN", 2: "logits contain +inf; softmax is undefined",
        3: "a row of logits is all -inf; softmax is undefined"}


def _raise_bad(bad: torch.Tensor) -> None:
    if bad.numel() == 0:
        return
    code = int(bad.max())
    if code:
        # NaN is reported first, as on the CPU backend.
        code = 1 if bool((bad == 1).any()) else code
        raise ValueError(_BAD[code])


def _logit_args(x: torch.Tensor, scale: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, bool, bool]:
    if x.shape[1] > 1 and x.stride(1) != 1:
        x = x.contiguous()
    int8 = x.dtype == torch.int8
    if int8:
        s = scale.to(device=x.device, dtype=torch.float32).reshape(-1).contiguous()
        return x, s, True, s.numel() > 1
    return x, _const(x.device, torch.float32, 1.0), False, False


def topk_rows(x: torch.Tensor, k: int, scale: torch.Tensor | None, softmax: bool,
              check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(values f32 [rows, k], indices int64 [rows, k]) of a 2-D float32/float16/int8 tensor.
    Bad rows are poisoned (NaN, -1); ``check`` raises ValueError for them instead (one sync)."""
    rows, n = x.shape
    if n > MAX_TOPK_CLASSES:
        raise ValueError(f"softmax_topk: the triton backend takes at most {MAX_TOPK_CLASSES} classes per row "
                         f"(got {n}); use backend='cuda' or the CPU")
    v = torch.empty((rows, k), dtype=torch.float32, device=x.device)
    i = torch.empty((rows, k), dtype=torch.int64, device=x.device)
    if rows == 0 or n == 0:
        return v, i
    x, s, int8, per = _logit_args(x, scale)
    bad = torch.empty(rows, dtype=torch.int32, device=x.device) if check else i
    block = max(64, triton.next_power_of_2(n))
    _topk_kernel[(rows,)](x, s, v, i, bad, n, x.stride(0), k, SOFTMAX=bool(softmax), INT8=int8, PER_CLASS=per,
                          BLOCK=block, CHECK=bool(check), num_warps=4 if block <= 4096 else 8)
    if check:
        _raise_bad(bad)
    return v, i


def softmax_rows(x: torch.Tensor, scale: torch.Tensor | None, log: bool, check: bool = False) -> torch.Tensor:
    """Row-wise softmax / log-softmax as float32; rows with NaN, +inf or all -inf come back NaN,
    or raise ValueError with ``check`` (one sync)."""
    rows, n = x.shape
    out = torch.empty((rows, n), dtype=torch.float32, device=x.device)
    if rows == 0 or n == 0:
        return out
    x, s, int8, per = _logit_args(x, scale)
    bad = torch.empty(rows, dtype=torch.int32, device=x.device) if check else out
    block = max(64, min(4096, triton.next_power_of_2(n)))
    _softmax_kernel[(rows,)](x, s, out, bad, n, x.stride(0), LOG=bool(log), INT8=int8, PER_CLASS=per, BLOCK=block,
                             CHECK=bool(check))
    if check:
        _raise_bad(bad)
    return out


def sigmoid_threshold(x: torch.Tensor, logit_threshold: float, scale: torch.Tensor | None) -> torch.Tensor:
    rows, n = x.shape
    out = torch.empty((rows, n), dtype=torch.uint8, device=x.device)
    if rows == 0 or n == 0:
        return out.view(torch.bool)
    x, s, int8, per = _logit_args(x, scale)
    block = max(64, min(1024, triton.next_power_of_2(n)))
    nb = triton.cdiv(n, block)
    bad = torch.empty(rows * nb, dtype=torch.int32, device=x.device)
    _sigmoid_threshold_kernel[(rows, nb)](x, s, out, bad, n, x.stride(0), float(logit_threshold),
                                          INT8=int8, PER_CLASS=per, BLOCK=block)
    _raise_bad(bad)
    return out.view(torch.bool)


def _embed(x: torch.Tensor, eps: float, normalize: bool, l2: bool, quant: bool, what: str, check: bool):
    rows, n = x.shape
    out = torch.empty((rows, n), dtype=torch.float32, device=x.device) if l2 else None
    q = torch.empty((rows, n), dtype=torch.int8, device=x.device) if quant else None
    sc = torch.empty(rows, dtype=torch.float32, device=x.device) if quant else None
    if rows == 0 or n == 0:
        if quant:
            sc.fill_(1.0)
        return out, q, sc
    if n > 1 and x.stride(1) != 1:
        x = x.contiguous()
    bad = torch.empty(rows, dtype=torch.int32, device=x.device) if check else x  # x: never written (CHECK off)
    rows_per = 16
    block = max(64, min(256, triton.next_power_of_2(n)))
    dummy = x if bad is x else bad
    kw = {} if x.device.type == "cpu" else {"enable_fp_fusion": False}  # no FMA: the CPU's rounding
    _embed_kernel[(triton.cdiv(rows, rows_per),)](
        x, out if l2 else dummy, q if quant else dummy, sc if quant else dummy, bad, rows, n, x.stride(0), float(eps),
        NORMALIZE=bool(normalize), L2=bool(l2), QUANT=bool(quant), ROWS=rows_per, BLOCK=block, CHECK=bool(check), **kw)
    if check and bool(bad.any()):
        raise ValueError(f"{what}: embeddings contain NaN or infinity")
    return out, q, sc


def l2_normalize(x: torch.Tensor, eps: float, check: bool = False) -> torch.Tensor:
    """``x / max(||x||, eps)`` per row of a float32 [rows, dim] tensor (equal to the CPU backend);
    rows with NaN / infinity come back NaN, or raise ValueError with ``check`` (one sync)."""
    return _embed(x, eps, True, True, False, "l2_normalize", check)[0]


def compress_embeddings(x: torch.Tensor, normalize: bool, eps: float,
                        check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [rows, dim], scales float32 [rows]) as ``pyperfcore.prepost.compress_embeddings``;
    rows with NaN / infinity get scale NaN and codes 0, or raise ValueError with ``check``."""
    _, q, sc = _embed(x, eps, normalize, False, True, "compress_embeddings", check)
    return q, sc
