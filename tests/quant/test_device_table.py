"""benchmarks/device_table.py, the last lines a device check prints: the GPU speed targets of the
linear layers read off a pytest-benchmark JSON (here a made-up one), met or not."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _table():
    spec = importlib.util.spec_from_file_location("device_table", ROOT / "benchmarks" / "device_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(group, name, ms):
    return {"group": group, "name": f"test_gpu_linear[{name}-7]", "stats": {"median": ms / 1e3}, "extra_info": {}}


def test_targets_read_off_a_benchmark_run(tmp_path, capsys):
    rows = [
        # M = 1: the small-M default against fp16 cuBLAS + GELU (needs 1.3x)
        _bench("gpu-w8a8-linear-1x4096x4096-gelu", "pyperfcore_auto_w8a8", 0.026),
        _bench("gpu-w8a8-linear-1x4096x4096-gelu", "pyperfcore_triton_w8a8", 0.052),
        _bench("gpu-w8a8-linear-1x4096x4096-gelu", "torch_fp16_addmm+gelu", 0.035),
        # M = 128: against _int_mm + epilogue
        _bench("gpu-w8a8-linear-128x4096x4096-gelu", "pyperfcore_triton_w8a8", 0.030),
        _bench("gpu-w8a8-linear-128x4096x4096-gelu", "torch_int_mm+epilogue", 0.0978),
        _bench("gpu-w8a8-linear-128x4096x4096-gelu", "torch_fp16_addmm+gelu", 0.036),
        # FP16: an old run without the auto variant (falls back to the Triton default); M = 1024 slower
        _bench("gpu-half-linear-16x4096x4096-gelu", "pyperfcore_triton_fp16_out16", 0.032),
        _bench("gpu-half-linear-16x4096x4096-gelu", "torch_fp16_addmm+gelu", 0.035),
        _bench("gpu-half-linear-1024x4096x4096-gelu", "pyperfcore_triton_fp16_out16", 0.113),
        _bench("gpu-half-linear-1024x4096x4096-gelu", "torch_fp16_addmm+gelu", 0.100),
        _bench("gpu-half-linear-4096x4096x4096-gelu", "pyperfcore_triton_fp16_out16", 0.3),
        _bench("normalize", "cuda", 0.05),
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": rows}))
    _table().main(str(path))
    out = capsys.readouterr().out.splitlines()
    start = out.index("GPU speed targets (peer median / shipped default median, one synchronized call each):")
    assert out[start + 1:] == [
        "  W8A8 linear M=1: pyperfcore_auto_w8a8 0.0260 ms vs torch_fp16_addmm+gelu 0.0350 ms = 1.35x (target 1.3x): met",
        "  W8A8 linear M=128: pyperfcore_triton_w8a8 0.0300 ms vs torch_int_mm+epilogue 0.0978 ms = 3.26x "
        "(target 1.3x): met",
        "  FP16 linear M=16: pyperfcore_triton_fp16_out16 0.0320 ms vs torch_fp16_addmm+gelu 0.0350 ms = 1.09x "
        "(target 1.0x): met",
        "  FP16 linear M=1024: pyperfcore_triton_fp16_out16 0.1130 ms vs torch_fp16_addmm+gelu 0.1000 ms = 0.88x "
        "(target 1.0x): NOT met",
        "  FP16 linear M=4096: no torch_fp16_addmm+gelu in this run",
    ]
    assert "normalize" in out and any("cuda" in line for line in out)


def test_no_results_is_said(tmp_path, capsys):
    _table().main(str(tmp_path / "missing.json"))
    assert capsys.readouterr().out.startswith("no benchmark results")
