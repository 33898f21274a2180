"""GPU sweep of the fused pre/post-processing ops: ours (cuda, triton) vs torch eager vs the copy floor.

Standalone (no pytest):  python benchmarks/gpu_sweep_prepost.py [--reps 100] [--quick]

Prints one line per measurement as it goes, then a table. Times are medians of per-call CUDA
event timings (warm-up first, >= 50 reps): each call is timed as the caller sees it on the
stream, host overhead included when the host is the slower side ("kernel" rows call the native
launcher directly, without the Python argument checks). The "host us" column is the host's
wall time per call over 200 back-to-back calls without a synchronization (the Python + launch
cost a serving loop pays on its CPU; for calls that synchronize it includes the GPU time).
GPU ops do not synchronize by default (bad rows are poisoned); "check_finite" rows raise on
NaN / infinity, which costs one synchronization per call. Every op is checked against torch (or
the CPU backend) before it is timed; a mismatch is printed and that row is skipped. A hard
watchdog ends the process after --limit seconds (default 60), so it never hangs a device check.
"""
from __future__ import annotations

import argparse
import faulthandler
import statistics
import sys
import time
import traceback

import numpy as np

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]

ROWS: list[tuple[str, str, float, float, str]] = []  # (case, impl, median ms, host us/call, note)


def timed(torch, fn, reps: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for a, b in zip(starts, ends):
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in zip(starts, ends))


def host_us(torch, fn, n: int = 200) -> float:
    """Host wall time per call of n back-to-back calls, no synchronization in between."""
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    t1 = time.perf_counter_ns()
    torch.cuda.synchronize()
    return (t1 - t0) / n / 1e3


def row(case: str, impl: str, ms: float, note: str = "", host: float = float("nan")) -> None:
    ROWS.append((case, impl, ms, host, note))
    print(f"  {case:<44} {impl:<26} {ms:9.4f} ms  host {host:7.1f} us  {note}", flush=True)


def attempt(case: str, impl: str, torch, fn, reps: int, check=None, note_fn=None, host_n: int = 200) -> float | None:
    try:
        if check is not None:
            check()
        ms = timed(torch, fn, reps)
        row(case, impl, ms, note_fn(ms) if note_fn else "", host_us(torch, fn, host_n))
        return ms
    except Exception as exc:  # a failing row is reported, the sweep goes on
        print(f"  {case:<44} {impl:<22} FAILED: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        return None


def gbps(nbytes: int):
    return lambda ms: f"{nbytes / ms / 1e6:7.0f} GB/s (bytes read + written)"


def sweep_normalize(torch, pp, cudamod, reps: int, sizes) -> None:
    m = torch.tensor(MEAN, device="cuda")
    s = torch.tensor(STD, device="cuda")
    for n in sizes:
        x = torch.randint(0, 256, (n, 224, 224, 3), dtype=torch.uint8, device="cuda")
        ref = ((x.float() - m) / s).permute(0, 3, 1, 2).contiguous()
        case = f"normalize f32 NCHW {n}x224x224x3"
        traffic = x.numel() + ref.numel() * 4
        out = torch.empty_like(ref)
        src = ref.clone()
        attempt(case, "copy floor", torch, lambda: out.copy_(src), reps, note_fn=gbps(ref.numel() * 8))
        attempt(case, "torch eager", torch, lambda: ((x.float() - m) / s).permute(0, 3, 1, 2).contiguous(), reps,
                note_fn=gbps(traffic))
        for impl in ("cuda", "triton"):
            if impl == "cuda" and cudamod is None:
                continue

            def check(impl=impl):
                got = pp.preprocess_images(x, mean=MEAN, std=STD, out=out, backend=impl)
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

            attempt(case, f"ours {impl} (out=)", torch,
                    lambda impl=impl: pp.preprocess_images(x, mean=MEAN, std=STD, out=out, backend=impl), reps, check,
                    gbps(traffic))
        if cudamod is not None:
            inv = [1.0 / v for v in STD]
            stream = torch.cuda.current_stream().cuda_stream
            args = (x.data_ptr(), list(x.shape), list(x.stride()), out.data_ptr(), 0, 224, 224, list(out.stride()), MEAN,
                    inv, False, 1.0, 0, 0, 0, 0, 0, 0, 0, 0, stream)
            attempt(case, "ours cuda (kernel)", torch, lambda: cudamod.prepost_preprocess(*args), reps,
                    note_fn=gbps(traffic))
            h = torch.empty(ref.shape, dtype=torch.float16, device="cuda")
            attempt(f"normalize f16 NCHW {n}x224x224x3", "ours cuda (out=)", torch,
                    lambda: pp.preprocess_images(x, mean=MEAN, std=STD, out=h, dtype="float16", backend="cuda"), reps,
                    lambda: torch.testing.assert_close(
                        pp.preprocess_images(x, mean=MEAN, std=STD, dtype="float16", backend="cuda"), ref.half(),
                        rtol=1e-3, atol=1e-3),
                    gbps(x.numel() + ref.numel() * 2))
            attempt(f"normalize f16 NCHW {n}x224x224x3", "torch eager", torch,
                    lambda: ((x.half() - m.half()) / s.half()).permute(0, 3, 1, 2).contiguous(), reps)
        del x, ref, out, src
        torch.cuda.empty_cache()


def sweep_resize(torch, pp, cudamod, reps: int, sizes) -> None:
    m = torch.tensor(MEAN, device="cuda").view(1, 3, 1, 1)
    s = torch.tensor(STD, device="cuda").view(1, 3, 1, 1)
    for n in sizes:
        x = torch.randint(0, 256, (n, 256, 256, 3), dtype=torch.uint8, device="cuda")
        case = f"resize256->232 crop224 norm {n} (OpenCV)"

        def eager():
            r = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(232, 232), mode="bilinear",
                                                align_corners=False, antialias=False)
            return ((r[:, :, 4:228, 4:228] - m) / s).contiguous()

        attempt(case, "torch eager", torch, eager, reps)
        out = torch.empty((n, 3, 224, 224), device="cuda")
        for impl in ("cuda", "triton"):
            if impl == "cuda" and cudamod is None:
                continue
            kw = dict(size=232, crop=224, mean=MEAN, std=STD, antialias=False, backend=impl)
            attempt(case, f"ours {impl} (out=)", torch, lambda kw=kw: pp.preprocess_images(x, out=out, **kw), reps,
                    lambda kw=kw: torch.testing.assert_close(pp.preprocess_images(x, **kw), eager(), rtol=1e-4,
                                                             atol=1e-4))
        del x, out
        torch.cuda.empty_cache()


def sweep_topk(torch, pp, cudamod, reps: int) -> None:
    for rows in (256, 4096):
        x = torch.randn(rows, 1000, device="cuda") * 3
        case = f"softmax+top5 {rows}x1000 f32"
        y = torch.empty_like(x)
        attempt(case, "copy floor", torch, lambda: y.copy_(x), reps)
        attempt(case, "torch eager", torch, lambda: torch.softmax(x, dim=1).topk(5, dim=1), reps)
        cv, ci = pp.softmax_topk(x.cpu().numpy(), 5, backend="cpu")
        for impl in ("cuda", "triton"):
            if impl == "cuda" and cudamod is None:
                continue

            def check(impl=impl):
                v, i = pp.softmax_topk(x, 5, backend=impl)
                np.testing.assert_array_equal(i.cpu().numpy(), ci)
                np.testing.assert_allclose(v.cpu().numpy(), cv, rtol=2e-5)

            attempt(case, f"ours {impl}", torch, lambda impl=impl: pp.softmax_topk(x, 5, backend=impl, check_finite=False), reps, check,
                    lambda ms: "no sync (bad rows poisoned)")
            attempt(case, f"ours {impl} check_finite", torch,
                    lambda impl=impl: pp.softmax_topk(x, 5, backend=impl, check_finite=True), reps,
                    note_fn=lambda ms: "raises on NaN/inf: one sync per call")
        if cudamod is not None:
            v = torch.empty((rows, 5), device="cuda")
            i = torch.empty((rows, 5), dtype=torch.int64, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            attempt(case, "ours cuda (kernel)", torch,
                    lambda: cudamod.prepost_topk(x.data_ptr(), 0, rows, 1000, 1000, 0, 0, 5, True, v.data_ptr(),
                                                 i.data_ptr(), 0, stream), reps)


def _torch_nms(torch, boxes, scores, idxs, thr):
    """The peer when torchvision is missing: coordinate-offset trick, IoU matrix on the GPU,
    greedy pass on the host (torchvision's own CUDA path also finishes on the host)."""
    off = idxs.to(boxes.dtype) * (boxes.max() + 1)
    b = boxes + off[:, None]
    order = torch.sort(scores, descending=True, stable=True).indices
    b = b[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    sup = (inter / (area[:, None] + area[None, :] - inter) > thr).cpu().numpy()
    n = b.shape[0]
    removed = np.zeros(n, bool)
    keep = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= sup[i]
    return order[torch.as_tensor(keep, device=boxes.device, dtype=torch.int64)]


def sweep_nms(torch, pp, cudamod, reps: int) -> None:
    try:
        from torchvision.ops import batched_nms as tv_nms
        peer = "torchvision batched_nms"
    except Exception:
        tv_nms = None
        peer = "torch reimpl (host pass)"
    rng = np.random.default_rng(3)
    for n in (1000, 5000):
        xy = rng.uniform(0, 1000, (n, 2))
        wh = rng.uniform(10, 150, (n, 2))
        bn = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        sn = rng.uniform(0, 1, n).astype(np.float32)
        cn = rng.integers(0, 80, n)
        b, s, c = (torch.from_numpy(a).cuda() for a in (bn, sn, cn))
        case = f"batched_nms {n} boxes 80 classes iou0.5"
        cpu_keep = pp.batched_nms(bn, sn, cn, 0.5, backend="cpu")
        if tv_nms is not None:
            attempt(case, peer, torch, lambda: tv_nms(b, s, c, 0.5), reps)
        else:
            attempt(case, peer, torch, lambda: _torch_nms(torch, b, s, c, 0.5), max(5, reps // 10), host_n=5)
        if cudamod is not None:
            attempt(case, "ours cuda", torch, lambda: pp.batched_nms(b, s, c, 0.5, backend="cuda"), reps,
                    lambda: np.testing.assert_array_equal(pp.batched_nms(b, s, c, 0.5, backend="cuda").cpu().numpy(),
                                                          cpu_keep), lambda ms: "one sync (kept count + NaN flag)")
            # Where the time goes: the torch sort/gather prologue alone, and our two kernels alone.
            def prologue():
                order = torch.sort(s, descending=True, stable=True).indices
                cs, rank = torch.sort(c[order], stable=True)
                bs = b[order[rank]]
                return torch.searchsorted(cs, cs, right=True), bs

            attempt(case, "ours cuda: torch prologue", torch, prologue, reps)
            ends, bs = prologue()
            cs = torch.sort(c[torch.sort(s, descending=True, stable=True).indices], stable=True).values
            cb = (n + 63) // 64
            ws = torch.empty(n * cb + cb + 1 + n + 1, dtype=torch.int64, device="cuda")
            stream = torch.cuda.current_stream().cuda_stream
            p0 = ws.data_ptr()
            attempt(case, "ours cuda: kernels only", torch,
                    lambda: cudamod.prepost_nms(bs.data_ptr(), s.data_ptr(), cs.data_ptr(), ends.data_ptr(), n, 0.5,
                                                p0, p0 + 8 * n * cb, p0 + 8 * (n * cb + cb + 1),
                                                p0 + 8 * (n * cb + cb + 1 + n), stream), reps)
        t0 = time.perf_counter()
        for _ in range(5):
            pp.batched_nms(bn, sn, cn, 0.5, backend="cpu")
        row(case, "ours cpu (host, wall)", (time.perf_counter() - t0) / 5 * 1e3, "host wall clock, for scale")


def sweep_embed(torch, pp, cudamod, reps: int) -> None:
    x = torch.randn(4096, 512, device="cuda")
    case = "l2_normalize 4096x512"
    attempt(case, "torch eager", torch, lambda: torch.nn.functional.normalize(x, dim=1), reps)
    xc = x.cpu().numpy()
    lc = pp.l2_normalize(xc, backend="cpu")
    qc, sc = pp.compress_embeddings(xc, backend="cpu")
    for impl in ("cuda", "triton"):
        if impl == "cuda" and cudamod is None:
            continue
        attempt(case, f"ours {impl}", torch, lambda impl=impl: pp.l2_normalize(x, backend=impl, check_finite=False), reps,
                lambda impl=impl: np.testing.assert_array_equal(pp.l2_normalize(x, backend=impl).cpu().numpy(), lc))
        attempt(case, f"ours {impl} check_finite", torch,
                lambda impl=impl: pp.l2_normalize(x, backend=impl, check_finite=True), reps)
    if cudamod is not None:
        out = torch.empty_like(x)
        stream = torch.cuda.current_stream().cuda_stream
        attempt(case, "ours cuda (kernel)", torch,
                lambda: cudamod.prepost_embed(x.data_ptr(), 4096, 512, 512, 1e-12, True, out.data_ptr(), 0, 0, 0,
                                              stream), reps)
    case = "compress_embeddings int8 4096x512"

    def torch_compress():
        v = torch.nn.functional.normalize(x, dim=1)
        s = v.abs().amax(dim=1).clamp(min=1e-30) / 127
        return torch.round(v / s[:, None]).clamp(-127, 127).to(torch.int8), s

    attempt(case, "torch eager", torch, torch_compress, reps)
    for impl in ("cuda", "triton"):
        if impl == "cuda" and cudamod is None:
            continue

        def check(impl=impl):
            q, s = pp.compress_embeddings(x, backend=impl)
            np.testing.assert_array_equal(q.cpu().numpy(), qc)
            np.testing.assert_array_equal(s.cpu().numpy(), sc)

        attempt(case, f"ours {impl}", torch, lambda impl=impl: pp.compress_embeddings(x, backend=impl, check_finite=False), reps, check)
        attempt(case, f"ours {impl} check_finite", torch,
                lambda impl=impl: pp.compress_embeddings(x, backend=impl, check_finite=True), reps)
    if cudamod is not None:
        q = torch.empty((4096, 512), dtype=torch.int8, device="cuda")
        sq = torch.empty(4096, device="cuda")
        stream = torch.cuda.current_stream().cuda_stream
        attempt(case, "ours cuda (kernel)", torch,
                lambda: cudamod.prepost_embed(x.data_ptr(), 4096, 512, 512, 1e-12, True, 0, q.data_ptr(), sq.data_ptr(),
                                              0, stream), reps)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--limit", type=float, default=60.0, help="hard watchdog, seconds (rows print as they go)")
    ap.add_argument("--quick", action="store_true", help="32 images only, 50 reps")
    args = ap.parse_args()
    faulthandler.dump_traceback_later(args.limit, exit=True)
    reps = max(50, 50 if args.quick else args.reps)
    try:
        import torch
    except ImportError:
        print("gpu_sweep_prepost: torch is not installed; nothing to do")
        return 0
    if not torch.cuda.is_available():
        print("gpu_sweep_prepost: torch sees no GPU; nothing to do")
        return 0
    import pyperfcore
    from pyperfcore import prepost as pp
    from pyperfcore._runtime import _cuda_module

    cudamod = _cuda_module() if pyperfcore.build_info().get("cuda") else None
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  reps {reps}  "
          f"cuda backend {'built' if cudamod is not None else 'NOT built'}", flush=True)
    sizes = (32,) if args.quick else (32, 256)
    t0 = time.perf_counter()
    for name, fn in (("normalize", lambda: sweep_normalize(torch, pp, cudamod, reps, sizes)),
                     ("resize", lambda: sweep_resize(torch, pp, cudamod, reps, sizes)),
                     ("topk", lambda: sweep_topk(torch, pp, cudamod, reps)),
                     ("nms", lambda: sweep_nms(torch, pp, cudamod, reps)),
                     ("embeddings", lambda: sweep_embed(torch, pp, cudamod, reps))):
        print(f"== {name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        try:
            fn()
        except Exception:
            traceback.print_exc()
    faulthandler.cancel_dump_traceback_later()
    print(f"\n== table (median ms; ratio = time / the case's first row; host us per call, no sync), "
          f"{time.perf_counter() - t0:.1f} s total")
    first: dict[str, float] = {}
    for case, impl, ms, host, note in ROWS:
        base = first.setdefault(case, ms)
        print(f"{case:<44} | {impl:<28} | {ms:9.4f} | {ms / base:6.2f}x | host {host:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
