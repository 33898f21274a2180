"""Device sweep of the Triton linear kernels (no pytest): what each autotune config costs, what
the shipped path costs, the peers, and the host launch overhead. K = N = 4096, bias + GELU.

    python benchmarks/gpu_sweep_quant.py [--budget 80] [--reps 50] [--m 1,16,128,1024,4096]

Times are medians of CUDA-event timings over --reps calls after warm-up (kernel configs: device
time of back-to-back launches; "shipped"/peers: each call timed alone, events around the call, so
host launch cost shows when it exceeds the GPU time). Prints rows as it goes; stops starting new
work after --budget seconds and exits through an alarm if anything stalls.
``--dry-run`` runs the whole script on the CPU under TRITON_INTERPRET=1 at K = N = 64 (to check the
script itself before spending device time; its times mean nothing).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time

if "--dry-run" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

T0 = time.time()
DRY = "--dry-run" in sys.argv


def sync():
    if not DRY:
        torch.cuda.synchronize()


@triton.jit
def _empty(p, N: tl.constexpr):
    pass


def out(*a):
    print(*a, flush=True)


def cuda_median_ms(fn, reps, warmup=5, each=True):
    if DRY:
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if not each:  # back-to-back: device throughput of the kernel alone
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(max(5, reps // 10)):
            s.record()
            for _ in range(10):
                fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 10)
        return statistics.median(times)
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def host_us(fn, n=200):
    """CPU time per call of issuing fn (no synchronization inside the loop)."""
    n = 2 if DRY else n
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    dt = time.perf_counter() - t
    sync()
    return dt / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=80.0)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--m", default="1,16,128,1024,4096")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (out("!! sweep watchdog: stalled, exiting"), os._exit(3)))
    signal.alarm(int(args.budget) + 60)
    if not DRY and not torch.cuda.is_available():
        out("no GPU visible to torch: nothing to sweep (--dry-run checks the script on the CPU)")
        return 0
    from pyperfcore.kernels import quant_gemm as qg

    KN = 64 if DRY else 4096
    dev = "cpu" if DRY else "cuda"
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(KN, KN, generator=g) * 0.02
    b = torch.randn(KN, generator=g) * 0.1
    scale = w.abs().amax(dim=1) / 127
    qw = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).to(dev)
    sw = scale.to(dev)
    cs = qw.to(torch.int32).sum(dim=1).to(torch.int32)
    bias = b.to(dev)
    w16, b16 = w.half().to(dev), b.half().to(dev)
    w_t = qw.t()
    wdq = (qw.double() * sw.double()[:, None])
    out(f"# {'DRY RUN (cpu, interpreter)' if DRY else torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}; K=N={KN}, bias+GELU; "
        f"median ms over {args.reps} reps")

    # ---- launcher overhead
    e = torch.empty(1, device=dev)
    _empty[(1,)](e, 1)
    x1 = torch.randn(1, KN, device=dev)
    a8 = (qw, sw, cs, bias, "gelu")
    out(f"host us/call: empty triton launch {host_us(lambda: _empty[(1,)](e, 1)):.1f}; "
        f"torch.empty {host_us(lambda: torch.empty((1, KN), device=dev)):.1f}; "
        f"linear_w8a8 M=1 fused {host_us(lambda: qg.linear_w8a8(x1, *a8)):.1f}; "
        f"two_pass {host_us(lambda: qg.linear_w8a8(x1, *a8, path='two_pass')):.1f}; "
        f"checked {host_us(lambda: qg.linear_w8a8(x1, *a8, check_finite=True), 50):.1f}; "
        f"linear_half M=1 {host_us(lambda: qg.linear_half(x1.half(), w16, bias, 'gelu')):.1f}")
    out(f"device ms: empty kernel (timed alone) {cuda_median_ms(lambda: _empty[(1,)](e, 1), args.reps):.4f}")

    def over():
        return time.time() - T0 > args.budget

    def cfg_name(c):
        k = c.kwargs
        extra = f" sk{k['SPLIT_K']}" if "SPLIT_K" in k else ""
        return f"{k['BLOCK_M']}x{k['BLOCK_N']}x{k['BLOCK_K']}{extra} w{c.num_warps} s{c.num_stages}"

    summary = []
    for m in [int(v) for v in args.m.split(",")]:
        if over():
            out(f"!! budget spent: skipping M={m} and after")
            break
        x = torch.randn(m, KN, generator=torch.Generator(device="cpu").manual_seed(m)).to(dev)
        x16 = x.half()
        ref = torch.nn.functional.gelu(x.double() @ wdq.T + bias.double())
        y = torch.empty(m, KN, device=dev)
        mb = qg._bucket(m)
        rows = []

        def row(label, ms, y_=None):
            cos = ""
            if y_ is not None:
                cos = f"  cos_min {float(torch.nn.functional.cosine_similarity(y_.double(), ref, dim=1).min()):.5f}"
            out(f"M={m:5d} {label:44s} {ms:8.4f} ms  {2 * m * KN * KN / ms / 1e9:8.1f} TOP/s{cos}")
            rows.append((label, ms))

        # each config, device time only (kernel launches back to back)
        if m <= 16 or m <= qg.FUSED_MAX_M:
            bad = torch.empty(m, dtype=torch.int32, device=dev)
            ws = torch.zeros(m * KN + triton.cdiv(m, 16) * triton.cdiv(KN, 16), dtype=torch.int32, device=dev)
            for c in qg._w8a8_fused_kernel.configs:
                if over():
                    break
                grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]), triton.cdiv(KN, c.kwargs["BLOCK_N"]), c.kwargs["SPLIT_K"])
                fn = lambda c=c, grid=grid: qg._w8a8_fused_kernel.fn[grid](  # noqa: E731
                    x, qw, sw, cs, bias, y, y, bad, ws, ws[m * KN:], m, KN, KN, mb, x.stride(0), qw.stride(0), 0,
                    y.stride(0), SYMMETRIC=False, HAS_BIAS=True, ACT=2, HAS_RES=False, num_warps=c.num_warps,
                    num_stages=c.num_stages, **c.kwargs)
                try:
                    row("w8a8 fused cfg " + cfg_name(c), cuda_median_ms(fn, args.reps, each=False), (fn(), y)[1])
                except Exception as exc:  # out of resources etc.: report, keep going
                    out(f"M={m:5d} w8a8 fused cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        q, sa, zp, badq = qg.quantize_activations_flagged(x)
        row("act-quant kernel alone", cuda_median_ms(lambda: qg.quantize_activations_flagged(x), args.reps, each=False))
        for c in qg._w8a8_kernel.configs:
            if over():
                break
            if c.kwargs["BLOCK_M"] > max(16, 2 * mb):
                continue
            grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]) * triton.cdiv(KN, c.kwargs["BLOCK_N"]),)
            fn = lambda c=c, grid=grid: qg._w8a8_kernel.fn[grid](  # noqa: E731
                q, qw, sa, zp, badq, sw, cs, bias, y, y, m, KN, KN, mb, q.stride(0), qw.stride(0), 0, y.stride(0),
                HAS_BIAS=True, ACT=2, HAS_RES=False, num_warps=c.num_warps, num_stages=c.num_stages, **c.kwargs)
            try:
                row("w8a8 gemm cfg " + cfg_name(c), cuda_median_ms(fn, args.reps, each=False), (fn(), y)[1])
            except Exception as exc:
                out(f"M={m:5d} w8a8 gemm cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        for c in qg._half_kernel.configs:
            if over():
                break
            if c.kwargs["BLOCK_M"] > max(16, 2 * mb):
                continue
            grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]) * triton.cdiv(KN, c.kwargs["BLOCK_N"]),)
            fn = lambda c=c, grid=grid: qg._half_kernel.fn[grid](  # noqa: E731
                x16, w16, bias, y, y, m, KN, KN, mb, x16.stride(0), w16.stride(0), 0, y.stride(0), HAS_BIAS=True,
                ACT=2, HAS_RES=False, DOT_F32=False, num_warps=c.num_warps, num_stages=c.num_stages, **c.kwargs)
            try:
                row("fp16 cfg " + cfg_name(c), cuda_median_ms(fn, args.reps, each=False))
            except Exception as exc:
                out(f"M={m:5d} fp16 cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        if over():
            continue
        # shipped paths and peers, each call timed alone (host launch cost included)
        shipped = lambda: qg.linear_w8a8(x, *a8)  # noqa: E731
        yy = shipped()
        sync()
        row("SHIPPED w8a8 (" + ("fused" if m <= qg.FUSED_MAX_M else "two_pass") + ")", cuda_median_ms(shipped, args.reps), yy)
        if m <= qg.FUSED_MAX_M:
            tp = lambda: qg.linear_w8a8(x, *a8, path="two_pass")  # noqa: E731
            row("w8a8 two_pass (forced)", cuda_median_ms(tp, args.reps), tp())
        elif m <= 128:  # where should FUSED_MAX_M be? (the fused kernel tunes here for this M)
            fz = lambda: qg.linear_w8a8(x, *a8, path="fused")  # noqa: E731
            row("w8a8 fused (forced)", cuda_median_ms(fz, args.reps), fz())
        row("SHIPPED w8a8 check_finite=True", cuda_median_ms(lambda: qg.linear_w8a8(x, *a8, check_finite=True), args.reps))
        hs = lambda: qg.linear_half(x16, w16, bias, "gelu")  # noqa: E731
        row("SHIPPED fp16 weights+act, fused epi", cuda_median_ms(hs, args.reps))
        hs32 = lambda: qg.linear_half(x, w16, bias, "gelu")  # noqa: E731
        row("SHIPPED fp16 weights, fp32 act in", cuda_median_ms(hs32, args.reps))
        peer16 = lambda: torch.nn.functional.gelu(torch.addmm(b16, x16, w16.T))  # noqa: E731
        row("PEER cuBLAS fp16 addmm + gelu", cuda_median_ms(peer16, args.reps), peer16().float())
        if m > 16 and not DRY:  # (CPU _int_mm has other shape rules)
            def int_mm():
                amax = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
                s = amax / 127
                qq = torch.round(x / s).clamp(-127, 127).to(torch.int8)
                return torch.nn.functional.gelu(torch._int_mm(qq, w_t).float() * s * sw + bias)
            row("PEER _int_mm + epilogue", cuda_median_ms(int_mm, args.reps), int_mm())
            row("PEER _int_mm alone (pre-quantized)", cuda_median_ms(lambda: torch._int_mm(q.view(torch.int8), w_t), args.reps))
        tuned = {k: v for k, v in qg._BEST.items() if k[1] == mb}
        out(f"M={m:5d} autotune picked: " + "; ".join(f"{k[0]}: {cfg_name(v)}" for k, v in tuned.items()))
        summary.append((m, dict(rows)))

    out("\n# summary (ms): M | w8a8 shipped | fp16 shipped | cuBLAS fp16+gelu | _int_mm+epi | w8a8 vs best peer")
    for m, r in summary:
        ours = next((v for k, v in r.items() if k.startswith("SHIPPED w8a8 (")), float("nan"))
        h = r.get("SHIPPED fp16 weights+act, fused epi", float("nan"))
        p16 = r.get("PEER cuBLAS fp16 addmm + gelu", float("nan"))
        pim = r.get("PEER _int_mm + epilogue", float("nan"))
        peer = pim if m > 16 else p16
        out(f"{m:5d} | {ours:.4f} | {h:.4f} | {p16:.4f} | {pim:.4f} | {peer / ours:.2f}x")
    out(f"# sweep took {time.time() - T0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
