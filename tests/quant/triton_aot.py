"""Compile every tuned config of the Triton GEMM kernels for a GPU target without a GPU.

Triton builds cubins offline (``triton.compile(ASTSource, target=GPUTarget("cuda", 90, 32))``,
its own ptxas), so a config that does not build for Hopper, spills, or needs more shared memory
than the card has shows up on any machine, not only in the device check. The kernels are
specialized as the launchers specialize them at run time (pointers, N, K and row strides
16-byte divisible; M and M_BUCKET not specialized). Resource usage comes from the cubin
(``cuobjdump -res-usage``), the instruction mix from the PTX.

Run as a script (without TRITON_INTERPRET): prints one JSON line per (kernel, config, arch):
    python -m tests.quant.triton_aot [--arch 90 --arch 80] [--kernel half_tma ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# H100/H200 (sm_90): 227 KiB of shared memory per block (opt-in maximum); A100 (sm_80): 163 KiB
SMEM_LIMIT = {90: 232448, 80: 166912}

# element types of the pointer arguments, per kernel (fp16 I/O where the kernel takes either)
_PTRS = {
    "half": {"x_ptr": "fp16", "w_ptr": "fp16", "b_ptr": "fp32", "r_ptr": "fp16", "y_ptr": "fp16"},
    "half_x32": {"x_ptr": "fp32", "w_ptr": "fp16", "b_ptr": "fp32", "r_ptr": "fp32", "y_ptr": "fp32"},
    "half_tma": {"b_ptr": "fp32", "r_ptr": "fp16", "y_ptr": "fp16"},
    "half_tma_bf16": {"b_ptr": "fp32", "r_ptr": "fp32", "y_ptr": "bf16"},
    "w8a8": {"q_ptr": "u8", "w_ptr": "i8", "sa_ptr": "fp32", "zp_ptr": "i32", "bad_ptr": "i32", "sw_ptr": "fp32",
             "cs_ptr": "i32", "b_ptr": "fp32", "r_ptr": "fp32", "y_ptr": "fp32"},
    "w8a8_tma": {"sa_ptr": "fp32", "zp_ptr": "i32", "bad_ptr": "i32", "sw_ptr": "fp32", "cs_ptr": "i32", "b_ptr": "fp32",
                 "r_ptr": "fp16", "y_ptr": "fp16"},
    "fused": {"x_ptr": "fp32", "w_ptr": "i8", "sw_ptr": "fp32", "cs_ptr": "i32", "b_ptr": "fp32", "r_ptr": "fp32",
              "y_ptr": "fp32", "bad_ptr": "i32", "ws_ptr": "i32", "cnt_ptr": "i32"},
}
_CONST = {
    "half": dict(HAS_BIAS=True, ACT=2, HAS_RES=False, DOT_F32=False, EVEN_K=True, ROW_MASK=False),
    "half_x32": dict(HAS_BIAS=True, ACT=2, HAS_RES=True, DOT_F32=False, EVEN_K=True, ROW_MASK=True),
    "half_tma": dict(HAS_BIAS=True, ACT=2, HAS_RES=False, DOT_F32=False, NUM_PROGS=132),
    "half_tma_bf16": dict(HAS_BIAS=True, ACT=4, HAS_RES=True, DOT_F32=False, NUM_PROGS=132),
    "w8a8": dict(HAS_BIAS=True, ACT=2, HAS_RES=False, EVEN_K=True, ROW_MASK=True),
    "w8a8_tma": dict(HAS_BIAS=True, ACT=2, HAS_RES=True, NUM_PROGS=132),
    "fused": dict(SYMMETRIC=False, HAS_BIAS=True, ACT=2, HAS_RES=False, EVEN_K=True),
}
_NOT_DIVISIBLE = {"M", "M_BUCKET"}


def _kernels():
    from pyperfcore.kernels import quant_gemm as qg

    return {"half": (qg._half_kernel, qg._half_kernel.configs), "half_x32": (qg._half_kernel, qg._half_kernel.configs),
            "half_tma": (qg._half_tma_kernel, qg._half_tma_kernel_configs),
            "half_tma_bf16": (qg._half_tma_kernel, qg._half_tma_kernel_configs),
            "w8a8": (qg._w8a8_kernel, qg._w8a8_kernel.configs),
            "w8a8_tma": (qg._w8a8_tma_kernel, qg._w8a8_tma_kernel_configs), "fused": (qg._w8a8_fused_kernel, qg._w8a8_fused_kernel.configs)}


def _jit(kernel):
    import triton

    f = kernel
    while not isinstance(f, triton.runtime.jit.JITFunction):
        f = f.fn
    return f


def _resources(cubin: bytes) -> dict:
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+).*?SHARED:(\d+).*?LOCAL:(\d+)", out, re.S)
    if m is None:
        raise RuntimeError("cuobjdump -res-usage: no resource line in\n" + out)
    return {"regs": int(m.group(1)), "static_smem": int(m.group(2)), "local": int(m.group(3))}


def compile_one(name: str, kernel, cfg, arch: int) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    jit = _jit(kernel)
    kw = cfg.kwargs
    sig, attrs = {}, {}
    for i, p in enumerate(jit.params):
        a = p.name
        if p.is_constexpr:
            sig[a] = "constexpr"
        elif a in ("x_desc", "q_desc", "w_desc"):
            dt = {"half_tma": "fp16", "half_tma_bf16": "bf16"}.get(name, "u8" if a == "q_desc" else "i8")
            rows = kw["BLOCK_N"] if a == "w_desc" else kw["BLOCK_M"]
            sig[a] = f"tensordesc<{dt}[{rows},{kw['BLOCK_K']}]>"
        elif a.endswith("_ptr"):
            sig[a] = "*" + _PTRS[name][a]
        else:
            sig[a] = "i32"
        if not p.is_constexpr and not a.endswith("_desc") and a not in _NOT_DIVISIBLE:
            attrs[(i,)] = [["tt.divisibility", 16]]
    const = {**_CONST[name], **kw}
    src = ASTSource(fn=jit, signature=sig, constexprs=const, attrs=attrs)
    row = {"kernel": name, "arch": arch, "config": f"{kw} w{cfg.num_warps} s{cfg.num_stages}"}
    try:
        c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    except Exception as e:  # noqa: BLE001 (reported per config)
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        return row
    ptx = c.asm["ptx"]
    row.update(_resources(c.asm["cubin"]), smem=int(c.metadata.shared), smem_limit=SMEM_LIMIT[arch],
               wgmma=ptx.count("wgmma.mma_async"), mma=ptx.count("mma.sync"), tma=ptx.count("cp.async.bulk.tensor"),
               cp_async=ptx.count("cp.async.cg") + ptx.count("cp.async.ca"))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, action="append", help="SM version (90, 80); default 90")
    ap.add_argument("--kernel", action="append", help="half, half_x32 (float32 x), half_tma, w8a8, w8a8_tma, fused; default all")
    ap.add_argument("--extra", action="store_true", help="also the INTERPRETER_EXTRA configs (the tests run them on a GPU)")
    a = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("run without TRITON_INTERPRET: the interpreter keeps one config per kernel", file=sys.stderr)
        return 2
    kernels = _kernels()
    from pyperfcore.kernels import quant_gemm as qg

    extra = {"half": "half", "half_tma": "half_tma", "w8a8": "w8a8", "w8a8_tma": "w8a8_tma", "fused": "fused"}
    for arch in a.arch or [90]:
        for name in a.kernel or list(kernels):
            if "_tma" in name and arch < 90:
                continue  # TMA: Hopper and later
            kernel, configs = kernels[name]
            for cfg in configs:
                print(json.dumps(compile_one(name, kernel, cfg, arch)), flush=True)
            if a.extra and name in extra:  # the small configs the tests also run on a GPU
                for cfg in qg.INTERPRETER_EXTRA[extra[name]]:
                    print(json.dumps({**compile_one(name, kernel, cfg, arch), "extra": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
