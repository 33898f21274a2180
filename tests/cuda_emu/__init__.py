"""The project's CUDA sources built by the host compiler against the CPU emulation of the device
(emulate.hpp; kernels/cuda/cuda_compat.hpp), loaded with ctypes: the kernels and their C++
launchers run on machines without a GPU, CI included. ``library()`` builds once per process;
``EmulatedCuda`` offers the prepost launchers with the argument order of the ``_cuda`` bindings,
so the Python CUDA backends run on CPU tensors against the real kernels."""
from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SOURCES = ["linear_small_emu.cpp", "quant_linear_emu.cpp", "quant_emu.cpp", "prepost_emu.cpp", "prepost_post_emu.cpp"]
_LIB: list = []


def cuda_include() -> str | None:
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    cands += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for c in cands:
        if c and (Path(c) / "include" / "cuda_fp16.h").is_file() and (Path(c) / "include" / "cuda_runtime.h").is_file():
            return str(Path(c) / "include")
    return None


def build(sources):
    """``sources`` (C++ files including .cu files under PYPERFCORE_CUDA_EMULATE) as a ctypes.CDLL;
    a string saying why not (no CUDA headers or no C++ compiler) when it cannot be built here."""
    inc = cuda_include()
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if inc is None or cxx is None:
        return f"needs the CUDA toolkit's headers and a C++20 compiler (include: {inc}, compiler: {cxx})"
    out = Path(tempfile.mkdtemp(prefix="pyperfcore-cuda-emu-")) / "libcuda_emu.so"
    # PFC_EMU_SANITIZE=address (run python with LD_PRELOAD=$(gcc -print-file-name=libasan.so) and
    # ASAN_OPTIONS=detect_leaks=0): every load and store of the kernels bounds-checked
    san = os.environ.get("PFC_EMU_SANITIZE")
    cmd = [cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas", "-Werror",
           *([f"-fsanitize={san}", "-fno-omit-frame-pointer"] if san else []),
           f"-I{ROOT / 'kernels' / 'cuda'}", f"-I{HERE}", f"-isystem{inc}", *(str(s) for s in sources),
           "-o", str(out), "-lpthread"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("building the emulated CUDA kernels failed:\n" + res.stderr[-4000:])
    return ctypes.CDLL(str(out))


def library():
    """The project's emulated kernels (SOURCES) as a ctypes.CDLL with argument types set, built
    once per process; a string saying why not when it cannot be built here."""
    if _LIB:
        return _LIB[0]
    lib = build([HERE / s for s in SOURCES])
    if isinstance(lib, str):
        return lib
    i64, ptr, i32, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    sig = {
        "emu_w8a8_small_workspace": (i64, [i64, i64]),
        "emu_linear_w8a8_small": (i32, [ptr, i32, i64, i64, i64, ptr, i64, i64, ptr, ptr, ptr, ptr, i32, i64, ptr, i32, i64,
                                        i32, i32, ptr, i64]),
        "emu_half_small_workspace": (i64, [i64, i64]),
        "emu_linear_half_small": (i32, [ptr, i32, i64, i64, i64, ptr, i32, i64, i64, ptr, ptr, i32, i64, ptr, i32, i64, i32,
                                        ptr, i64]),
        "emu_quantize_rows_u8": (i32, [ptr, i64, i64, i64, ptr, i64, ptr, ptr, i32, ptr, ptr]),
        "emu_dequantize_rows_u8": (i32, [ptr, i64, i64, i64, ptr, ptr, ptr]),
        "emu_quantize_int8": (i32, [ptr, i32, i64, i64, i64, i64, i64, i64, ptr, ptr, ptr]),
        "emu_dequantize_int8": (i32, [ptr, ptr, i64, i64, i64, ptr]),
        "emu_prepost_preprocess": (i32, [ptr]),
        "emu_prepost_image_args_size": (i64, []),
        "emu_prepost_topk": (i32, [ptr, i32, i64, i64, i64, ptr, i64, i64, i32, ptr, ptr, ptr]),
        "emu_prepost_nms": (i32, [ptr, ptr, ptr, ptr, i64, f32, ptr, ptr, ptr, ptr]),
        "emu_prepost_embed": (i32, [ptr, i64, i64, i64, f32, i32, ptr, ptr, ptr, ptr]),
    }
    for name, (res_t, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res_t, args
    _LIB.append(lib)
    return lib


class ImageArgs(ctypes.Structure):
    """kernels/cuda/prepost_cuda.hpp's PrepostImageArgs (checked against its sizeof)."""
    _fields_ = [("x", ctypes.c_void_p), ("n", ctypes.c_int64), ("h", ctypes.c_int64), ("w", ctypes.c_int64),
                ("c", ctypes.c_int64), ("xs_n", ctypes.c_int64), ("xs_h", ctypes.c_int64), ("xs_w", ctypes.c_int64),
                ("xs_c", ctypes.c_int64), ("out", ctypes.c_void_p), ("out_kind", ctypes.c_int), ("oh", ctypes.c_int64),
                ("ow", ctypes.c_int64), ("os_n", ctypes.c_int64), ("os_c", ctypes.c_int64), ("os_h", ctypes.c_int64),
                ("os_w", ctypes.c_int64), ("mean", ctypes.c_float * 3), ("inv_std", ctypes.c_float * 3),
                ("swap_rb", ctypes.c_int), ("out_scale", ctypes.c_float), ("top", ctypes.c_int64),
                ("left", ctypes.c_int64), ("ys", ctypes.c_void_p), ("yw", ctypes.c_void_p), ("ty", ctypes.c_int64),
                ("xs", ctypes.c_void_p), ("xw", ctypes.c_void_p), ("tx", ctypes.c_int64)]


class EmulatedCuda:
    """The prepost part of ``pyperfcore._cuda`` (same names, same arguments, the stream last),
    running the real kernels under the emulation; a non-zero launcher status raises as the
    bindings do."""

    def __init__(self, lib):
        self.lib = lib
        assert ctypes.sizeof(ImageArgs) == lib.emu_prepost_image_args_size()
        self.calls: list[str] = []

    def _check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: CUDA error {rc}")

    def prepost_preprocess(self, x, shape, x_strides, out, out_kind, oh, ow, out_strides, mean, inv_std, swap_rb,
                           out_scale, top, left, ys, yw, ty, xs, xw, tx, stream):
        a = ImageArgs()
        a.x, (a.n, a.h, a.w, a.c) = x, shape
        a.xs_n, a.xs_h, a.xs_w, a.xs_c = x_strides
        a.out, a.out_kind, a.oh, a.ow = out, out_kind, oh, ow
        a.os_n, a.os_c, a.os_h, a.os_w = out_strides
        for i in range(shape[3]):
            a.mean[i], a.inv_std[i] = mean[i], inv_std[i]
        a.swap_rb = int(bool(swap_rb) and shape[3] == 3)
        a.out_scale, a.top, a.left = out_scale, top, left
        a.ys, a.yw, a.ty, a.xs, a.xw, a.tx = ys or None, yw or None, ty, xs or None, xw or None, tx
        self.calls.append("preprocess")
        self._check(self.lib.emu_prepost_preprocess(ctypes.byref(a)), "prepost_preprocess")

    def prepost_topk(self, x, dtype, rows, cols, row_stride, scales, n_scales, k, softmax, values, indices, bad, stream):
        self.calls.append("topk")
        self._check(self.lib.emu_prepost_topk(x, dtype, rows, cols, row_stride, scales or None, n_scales, k, int(softmax),
                                              values, indices, bad or None), "prepost_topk")

    def prepost_nms(self, boxes, scores, classes, class_end, n, thr, mask, removed, keep, count, stream):
        self.calls.append("nms")
        self._check(self.lib.emu_prepost_nms(boxes, scores, classes, class_end, n, thr, mask, removed, keep, count),
                    "prepost_nms")

    def prepost_embed(self, x, rows, dim, row_stride, eps, normalize, out, q, scales, bad, stream):
        self.calls.append("embed")
        self._check(self.lib.emu_prepost_embed(x, rows, dim, row_stride, eps, int(normalize), out or None, q or None,
                                               scales or None, bad or None), "prepost_embed")
