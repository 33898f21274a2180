"""Device sweep of the Triton linear kernels (no pytest): host cost per call of the public paths
and the peers, what each autotune config costs on the device, what the shipped paths cost.
K = N = 4096, bias + GELU.

    python benchmarks/gpu_sweep_quant.py [--budget 110] [--m 1,16,128,1024,4096]

Three kinds of figures (all medians):
- host us/call: CPU time to issue one call (time.perf_counter over 300 calls, no sync inside);
- dev ms: device time (triton.testing.do_bench: L2 flushed before each run, so the weight
  comes from HBM as in serving, and host launch cost is hidden behind the flush);
- loop ms: wall time per call of 20 calls issued back to back (CUDA events), what a serving
  loop pays: max(host, device) per call;
- alone ms: one call on an idle GPU (sync, events around the call): latency, host included.
Prints rows as it goes; stops starting new work after --budget seconds (the per-config rows
after 60% of it, so that every M keeps its shipped and peer rows) and exits through an
alarm if anything stalls. ``--dry-run`` runs the script on the CPU under TRITON_INTERPRET=1 at
K = N = 64 (to check the script itself; its times mean nothing).
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


def _dry_ms(fn):
    fn()
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def dev_ms(fn):
    """Device time: do_bench with the L2 flush (as the autotuner measures)."""
    if DRY:
        return _dry_ms(fn)
    return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")


def loop_ms(fn, calls=20, rounds=7):
    if DRY:
        return _dry_ms(fn)
    fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(rounds):
        s.record()
        for _ in range(calls):
            fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / calls)
    return statistics.median(times)


def alone_ms(fn, reps=30):
    if DRY:
        return _dry_ms(fn)
    fn()
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


def host_us(fn, n=300):
    """CPU time per call of issuing fn (no synchronization inside the loop; median of 3 runs)."""
    n = 2 if DRY else n
    fn()
    sync()
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
        sync()
    return statistics.median(runs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=110.0)
    ap.add_argument("--m", default="1,16,128,1024,4096")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (out("!! sweep watchdog: stalled, exiting"), os._exit(3)))
    signal.alarm(int(args.budget) + 30)
    if not DRY and not torch.cuda.is_available():
        out("no GPU visible to torch: nothing to sweep (--dry-run checks the script on the CPU)")
        return 0
    from pyperfcore import quant
    from pyperfcore.kernels import quant_gemm as qg

    KN = 64 if DRY else 4096
    dev = "cpu" if DRY else "cuda"
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(KN, KN, generator=g) * 0.02
    b = torch.randn(KN, generator=g) * 0.1
    layer = quant.QuantizedLinear(w.numpy(), b.numpy(), activation="gelu")
    qw = torch.from_numpy(layer.qweight).to(dev)
    sw = torch.from_numpy(layer.wscale).to(dev)
    cs = qw.to(torch.int32).sum(dim=1).to(torch.int32)
    bias = b.to(dev)
    w16, b16 = w.half().to(dev), b.half().to(dev)
    w_t = qw.t()
    wdq = qw.double() * sw.double()[:, None]
    out(f"# {'DRY RUN (cpu, interpreter)' if DRY else torch.cuda.get_device_name()} torch {torch.__version__} "
        f"triton {triton.__version__}; K=N={KN}, bias+GELU; fast launch {'on' if qg.FAST_LAUNCH else 'OFF'}, "
        f"FUSED_MAX_M {qg.FUSED_MAX_M}")
    a8 = (qw, sw, cs, bias, "gelu")

    def int_mm_epi(x):
        amax = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        s = amax / 127
        qq = torch.round(x / s).clamp(-127, 127).to(torch.int8)
        return torch.nn.functional.gelu(torch._int_mm(qq, w_t).float() * s * sw + bias)

    # ---- direct-launch diagnostic (first, a few seconds): is triton's per-call machinery skipped?
    x1, x32 = torch.randn(1, KN, device=dev), torch.randn(32, KN, device=dev)
    launches = [0]
    normal_launch = qg._launch

    def counting_launch(*a, **k):
        launches[0] += 1
        return normal_launch(*a, **k)

    qg._launch = counting_launch
    try:
        rt = getattr(getattr(triton, "knobs", None), "runtime", None)
        hooks = "no triton.knobs" if rt is None else (
            f"launch hooks: enter {type(rt.launch_enter_hook).__name__} active={qg._hook_on(rt.launch_enter_hook)}, "
            f"exit active={qg._hook_on(rt.launch_exit_hook)}")
        out(f"diag: FAST_LAUNCH {qg.FAST_LAUNCH}; {hooks}; _direct_ok(dev) "
            f"{qg._direct_ok(0) if not DRY else 'n/a (cpu)'}")
        for label, xx, kind in (("M=1 fused", x1, "fused"), ("M=32 two_pass", x32, "w8a8")):
            t0 = time.time()
            y0 = qg.linear_w8a8(xx, *a8)  # tunes (first call of this key)
            qg.linear_w8a8(xx, *a8)  # records the direct entry
            sync()
            mbx = 1 << (xx.shape[0] - 1).bit_length()
            ents = [(k, v) for k, v in qg._DIRECT.items()
                    if (k[0] == kind and k[2] == mbx) or (kind == "w8a8" and k[0] == "aq")]
            if not ents:
                out(f"diag {label}: no direct entry recorded (FAST_LAUNCH {qg.FAST_LAUNCH})")
            for k, v in ents:
                out(f"diag {label}: key {k[:5]} entry {'yes' if v else 'NO'} ptrs {v.ptrs if v else None} "
                    f"blocks {(v.bm, v.bn, v.sk) if v else None}; why: {qg.DIRECT_WHY.get(k, '-')}")
            before = launches[0]
            for _ in range(10):
                y1 = qg.linear_w8a8(xx, *a8)
            sync()
            used = 10 - (launches[0] - before)
            diff = float((y1 - y0).abs().max()) if y0.numel() else 0.0
            out(f"diag {label}: {used}/10 calls took the direct launch; max |direct - first call| {diff:.3g}; "
                f"tune+record {time.time() - t0:.1f} s")
            h_direct = host_us(lambda: qg.linear_w8a8(xx, *a8), 200)
            fl, qg.FAST_LAUNCH = qg.FAST_LAUNCH, False
            h_normal = host_us(lambda: qg.linear_w8a8(xx, *a8), 200)
            qg.FAST_LAUNCH = fl
            out(f"diag {label}: host us/call direct {h_direct:.1f} vs triton normal launch {h_normal:.1f}")
    finally:
        qg._launch = normal_launch

    # ---- host cost per call (the device's CPU)
    e = torch.empty(1, device=dev)
    _empty[(1,)](e, 1)
    x1h = x1.half()
    for fn in (lambda: qg.linear_w8a8(x1, *a8), lambda: qg.linear_w8a8(x1, *a8, path="two_pass"),
               lambda: qg.linear_half(x1h, w16, bias, "gelu"), lambda: qg.linear_half(x1, w16, bias, "gelu"),
               lambda: qg.linear_w8a8(x32, *a8)):
        fn(), fn()  # tune + record the direct launch
    hosts = [("empty triton launch", lambda: _empty[(1,)](e, 1)),
             ("torch.empty [1,4096]", lambda: torch.empty((1, KN), device=dev)),
             ("linear_w8a8 M=1 fused", lambda: qg.linear_w8a8(x1, *a8)),
             ("linear_w8a8 M=1 two_pass", lambda: qg.linear_w8a8(x1, *a8, path="two_pass")),
             ("linear_w8a8 M=32 two_pass", lambda: qg.linear_w8a8(x32, *a8)),
             ("linear_w8a8 M=1 check_finite (syncs)", lambda: qg.linear_w8a8(x1, *a8, check_finite=True)),
             ("linear_half M=1 fp16 in", lambda: qg.linear_half(x1h, w16, bias, "gelu")),
             ("linear_half M=1 fp32 in", lambda: qg.linear_half(x1, w16, bias, "gelu")),
             ("QuantizedLinear(x, backend='triton') M=1 (checked)", lambda: layer(x1, backend="triton")),
             ("PEER torch addmm+gelu fp16 M=1", lambda: torch.nn.functional.gelu(torch.addmm(b16, x1h, w16.T))),
             ]
    if not DRY:
        hosts.append(("PEER _int_mm+epilogue M=32", lambda: int_mm_epi(x32)))
        hosts.append(("linear_w8a8 M=1 cuda C++ small-M kernel", lambda: qg.linear_w8a8(x1, *a8, path="cuda")))
        hosts.append(("linear_half M=1 fp16 in, cuda C++ small-M kernel",
                      lambda: qg.linear_half(x1h, w16, bias, "gelu", path="cuda")))
    for label, fn in hosts:
        out(f"host us/call: {label:52s} {host_us(fn, 50 if 'check' in label else 300):7.1f}")
    if not DRY and qg.FAST_LAUNCH:
        qg.FAST_LAUNCH = False
        out(f"host us/call: {'linear_w8a8 M=1 fused, triton normal launch':52s} {host_us(lambda: qg.linear_w8a8(x1, *a8)):7.1f}")
        out(f"host us/call: {'linear_half M=1 fp16 in, triton normal launch':52s} "
            f"{host_us(lambda: qg.linear_half(x1h, w16, bias, 'gelu')):7.1f}")
        qg.FAST_LAUNCH = True
    live = [v and v.ptrs is not None for v in qg._DIRECT.values()]
    for k, why in qg.DIRECT_WHY.items():
        if why != "recorded":
            out(f"direct launch refused for {k[:5]}: {why}")
    out("direct launches recorded: " + ", ".join(sorted({str(k[0]) for k, v in qg._DIRECT.items() if v and v.ptrs is not None}))
        + ("" if all(live) else f" ({live.count(False)} keys fell back to the normal path)"))

    def over():
        return time.time() - T0 > args.budget

    def detail_over():  # per-config rows stop early, so every M still gets its shipped and peer rows
        return time.time() - T0 > 0.6 * args.budget

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
        rows = {}

        def row(label, ms, y_=None, kind="dev"):
            cos = ""
            if y_ is not None:
                cos = f"  cos_min {float(torch.nn.functional.cosine_similarity(y_.double(), ref, dim=1).min()):.5f}"
            out(f"M={m:5d} {label:44s} {kind:5s} {ms:8.4f} ms  {2 * m * KN * KN / ms / 1e9:8.1f} TOP/s{cos}")
            rows[(label, kind)] = ms

        # each config of ours: device time
        if m <= max(16, qg.FUSED_MAX_M):
            bad = torch.empty(m, dtype=torch.int32, device=dev)
            ws = torch.zeros(m * KN + triton.cdiv(m, 16) * triton.cdiv(KN, 16) + 4, dtype=torch.int32, device=dev)
            o = (m * KN + 3) // 4 * 4
            for c in qg._w8a8_fused_kernel.configs:
                if detail_over():
                    break
                grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]), triton.cdiv(KN, c.kwargs["BLOCK_N"]), c.kwargs["SPLIT_K"])
                fn = lambda c=c, grid=grid: qg._w8a8_fused_kernel.fn[grid](  # noqa: E731
                    x, qw, sw, cs, bias, y, y, bad, ws, ws[o:], m, KN, KN, mb, x.stride(0), qw.stride(0), 0,
                    y.stride(0), SYMMETRIC=False, HAS_BIAS=True, ACT=2, HAS_RES=False, num_warps=c.num_warps,
                    num_stages=c.num_stages, **c.kwargs)
                try:
                    row("w8a8 fused cfg " + cfg_name(c), dev_ms(fn), (fn(), y)[1])
                except Exception as exc:  # out of resources etc.: report, keep going
                    out(f"M={m:5d} w8a8 fused cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        q, sa, zp, badq = qg.quantize_activations_flagged(x)
        row("act-quant kernel alone", dev_ms(lambda: qg.quantize_activations_flagged(x)))
        for c in qg._w8a8_kernel.configs:
            if detail_over():
                break
            if c not in qg._prune_by_m(qg._w8a8_kernel.configs, {"M_BUCKET": mb}):
                continue
            grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]) * triton.cdiv(KN, c.kwargs["BLOCK_N"]),)
            fn = lambda c=c, grid=grid: qg._w8a8_kernel.fn[grid](  # noqa: E731
                q, qw, sa, zp, badq, sw, cs, bias, y, y, m, KN, KN, mb, q.stride(0), qw.stride(0), 0, y.stride(0),
                HAS_BIAS=True, ACT=2, HAS_RES=False, num_warps=c.num_warps, num_stages=c.num_stages, **c.kwargs)
            try:
                row("w8a8 gemm cfg " + cfg_name(c), dev_ms(fn), (fn(), y)[1])
            except Exception as exc:
                out(f"M={m:5d} w8a8 gemm cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        tma_rows = m >= min(128, qg.TMA_MIN_M) and (DRY or torch.cuda.get_device_capability()[0] >= 9)
        if tma_rows:  # (timed from M = 128 whatever TMA_MIN_M is, to show where TMA starts to pay)
            tmeta = dict(HAS_BIAS=True, ACT=2, HAS_RES=False)
            for c in qg._tma_prune(qg._w8a8_tma_kernel_configs, mb):  # the persistent TMA GEMM
                if detail_over():
                    break
                targs = qg._w8a8_tma_args(c, q, qw, sa, zp, badq, sw, cs, bias, y, y, m, KN, KN, mb, 0)
                fn = lambda c=c, targs=targs: qg._w8a8_tma_run(c, targs, tmeta, -1 if DRY else torch.cuda.current_device())  # noqa: E731
                try:
                    row("w8a8 TMA gemm cfg " + cfg_name(c), dev_ms(fn), (fn(), y)[1])
                except Exception as exc:
                    out(f"M={m:5d} w8a8 TMA gemm cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        for c in qg._half_kernel.configs:
            if detail_over():
                break
            if c not in qg._prune_by_m(qg._half_kernel.configs, {"M_BUCKET": mb}):
                continue
            grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]) * triton.cdiv(KN, c.kwargs["BLOCK_N"]),)
            fn = lambda c=c, grid=grid: qg._half_kernel.fn[grid](  # noqa: E731
                x16, w16, bias, y, y, m, KN, KN, mb, x16.stride(0), w16.stride(0), 0, y.stride(0), HAS_BIAS=True,
                ACT=2, HAS_RES=False, DOT_F32=False, num_warps=c.num_warps, num_stages=c.num_stages, **c.kwargs)
            try:
                row("fp16 cfg " + cfg_name(c), dev_ms(fn))
            except Exception as exc:
                out(f"M={m:5d} fp16 cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
        if over():
            continue
        # shipped paths and peers: device, back-to-back loop, alone
        shipped = lambda: qg.linear_w8a8(x, *a8)  # noqa: E731
        yy = shipped()
        yy = shipped()  # (first call tunes, second records the direct launch)
        sync()
        small = [v for key, v in qg._SMALL.items() if key[0] == "w8a8" and key[2] == mb and key[5] == x.dtype]
        lab = "SHIPPED w8a8 (" + ("two_pass" if m > qg.FUSED_MAX_M else "cuda C++" if small == [True] else "fused") + ")"
        row(lab, dev_ms(shipped), yy)
        row(lab, loop_ms(shipped), kind="loop")
        row(lab, alone_ms(shipped), kind="alone")
        other = "two_pass" if m <= qg.FUSED_MAX_M else ("fused" if m <= 256 else None)
        if other:  # where should FUSED_MAX_M be?
            fo = lambda: qg.linear_w8a8(x, *a8, path=other)  # noqa: E731
            yo = fo()
            yo = fo()
            row(f"w8a8 {other} (forced)", dev_ms(fo), yo)
            row(f"w8a8 {other} (forced)", loop_ms(fo), kind="loop")
        if m <= 16 and not DRY:  # the CUDA C++ small-M kernel (opt-in until measured faster)
            fc = lambda: qg.linear_w8a8(x, *a8, path="cuda")  # noqa: E731
            yc = fc()
            sync()
            row("w8a8 cuda C++ small-M", dev_ms(fc), yc)
            row("w8a8 cuda C++ small-M", loop_ms(fc), kind="loop")
            row("w8a8 cuda C++ small-M", alone_ms(fc), kind="alone")
            fh = lambda: qg.linear_half(x16, w16, bias, "gelu", path="cuda")  # noqa: E731
            yh = fh()
            sync()
            row("fp16 cuda C++ small-M", dev_ms(fh), yh)
            row("fp16 cuda C++ small-M", loop_ms(fh), kind="loop")
            row("fp16 cuda C++ small-M", alone_ms(fh), kind="alone")
        row("SHIPPED w8a8 check_finite=True", alone_ms(lambda: qg.linear_w8a8(x, *a8, check_finite=True)), kind="alone")
        if tma_rows:
            pick = qg._PICK.get(("w8a8", mb, KN, KN, -1 if DRY else torch.cuda.current_device()), "none")
            out(f"M={m:5d} shipped w8a8 GEMM pick: {'pointer kernel' if pick is None else pick}")
            for p in ("pointer", "tma"):
                fp = lambda p=p: qg.linear_w8a8(x, *a8, path=p)  # noqa: E731
                fp(), fp()
                row(f"w8a8 two-pass, {p} GEMM (forced)", dev_ms(fp), fp())
                row(f"w8a8 two-pass, {p} GEMM (forced)", loop_ms(fp), kind="loop")
        hs = lambda: qg.linear_half(x16, w16, bias, "gelu")  # noqa: E731
        hs(), hs()  # (from TMA_MIN_M its first call picks between the pointer and TMA kernels)
        if tma_rows:
            pick = qg._PICK.get(("half", mb, KN, KN, -1 if DRY else torch.cuda.current_device(), torch.float16), "none")
            out(f"M={m:5d} shipped fp16 pick: {'pointer kernel' if pick is None else pick}; skipped: {qg.TMA_WHY}")
        if tma_rows and not detail_over():  # the persistent TMA kernel, each config that suits M (fp16 out)
            y16 = torch.empty((m, KN), dtype=torch.float16, device=dev)
            meta = dict(HAS_BIAS=True, ACT=2, HAS_RES=False, DOT_F32=False)
            for c in qg._tma_prune(qg._half_tma_kernel_configs, mb):
                fn = lambda c=c: qg._half_tma_run(c, x16, w16, bias, y16, y16, m, KN, KN, mb, 0, meta)  # noqa: E731
                try:
                    row("fp16 TMA cfg " + cfg_name(c), dev_ms(fn), (fn(), y16.float())[1])
                except Exception as exc:
                    out(f"M={m:5d} fp16 TMA cfg {cfg_name(c)} failed: {type(exc).__name__}: {exc}")
            hp = lambda: qg.linear_half(x16, w16, bias, "gelu", out_dtype=torch.float16, path="pointer")  # noqa: E731
            hp(), hp()
            row("fp16 pointer kernel, fp16 out", dev_ms(hp), hp().float())
            row("fp16 pointer kernel, fp16 out", loop_ms(hp), kind="loop")
            ht = lambda: qg.linear_half(x16, w16, bias, "gelu", out_dtype=torch.float16, path="tma")  # noqa: E731
            ht(), ht()
            row("fp16 TMA kernel (pick/1st cfg), fp16 out", dev_ms(ht), ht().float())
            row("fp16 TMA kernel (pick/1st cfg), fp16 out", loop_ms(ht), kind="loop")
            row("fp16 TMA kernel (pick/1st cfg), fp16 out", alone_ms(ht), kind="alone")
        row("SHIPPED fp16 weights+act, fused epi", dev_ms(hs))
        row("SHIPPED fp16 weights+act, fused epi", loop_ms(hs), kind="loop")
        row("SHIPPED fp16 weights+act, fused epi", alone_ms(hs), kind="alone")
        hs32 = lambda: qg.linear_half(x, w16, bias, "gelu")  # noqa: E731
        hs32(), hs32()
        row("SHIPPED fp16 weights, fp32 act in", loop_ms(hs32), kind="loop")
        peer16 = lambda: torch.nn.functional.gelu(torch.addmm(b16, x16, w16.T))  # noqa: E731
        row("PEER cuBLAS fp16 addmm + gelu", dev_ms(peer16), peer16().float())
        row("PEER cuBLAS fp16 addmm + gelu", loop_ms(peer16), kind="loop")
        row("PEER cuBLAS fp16 addmm + gelu", alone_ms(peer16), kind="alone")
        if m > 16 and not DRY:  # (CPU _int_mm has other shape rules)
            pim = lambda: int_mm_epi(x)  # noqa: E731
            row("PEER _int_mm + epilogue", dev_ms(pim), pim())
            row("PEER _int_mm + epilogue", loop_ms(pim), kind="loop")
            row("PEER _int_mm + epilogue", alone_ms(pim), kind="alone")
            row("PEER _int_mm alone (pre-quantized)", dev_ms(lambda: torch._int_mm(q.view(torch.int8), w_t)))
        tuned = {k: v for k, v in qg._BEST.items() if k[1] == mb}
        out(f"M={m:5d} autotune picked: " + "; ".join(f"{k[0]}: {cfg_name(v)}" for k, v in tuned.items()))
        if m <= qg.FUSED_MAX_M:  # SMALL_M_PATH "auto": which kernels the shipped calls took, and the times
            out(f"M={m:5d} small-M picks ({qg.SMALL_M_PATH}): " + "; ".join(
                f"{k[0]} x {str(k[5])[6:]}: {'cuda C++' if qg._SMALL.get(k) else 'triton'} ({v})"
                for k, v in qg.SMALL_WHY.items() if k[2] == mb))
        summary.append((m, lab, rows))

    nan = float("nan")
    out("\n# summary (ms; loop = back-to-back calls, dev = device only): M | w8a8 shipped loop/dev | "
        "fp16 shipped loop/dev | cuBLAS fp16+gelu loop/dev | _int_mm+epi loop/dev | w8a8 vs peer (loop)")
    for m, lab, r in summary:
        def pair(label):
            return f"{r.get((label, 'loop'), nan):.4f}/{r.get((label, 'dev'), nan):.4f}"
        peer = "PEER _int_mm + epilogue" if m > 16 else "PEER cuBLAS fp16 addmm + gelu"
        ratio = r.get((peer, "loop"), nan) / r.get((lab, "loop"), nan)
        out(f"{m:5d} | {pair(lab)} | {pair('SHIPPED fp16 weights+act, fused epi')} | "
            f"{pair('PEER cuBLAS fp16 addmm + gelu')} | {pair('PEER _int_mm + epilogue')} | {ratio:.2f}x")
    out(f"# sweep took {time.time() - T0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
