"""The package itself: lazy imports, build info, targets, threads, fork safety, C++ package files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyperfcore


def _run(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120)


def test_import_is_light():
    code = (
        "import sys, pyperfcore, pyperfcore.quant, pyperfcore.kernels\n"
        "heavy = [m for m in ('torch', 'triton', 'cuda', 'pyperfcore._cuda') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""


def test_build_info_keys():
    info = pyperfcore.build_info()
    for key in ("cpu_targets", "cpu_targets_supported", "cpu_target", "cuda", "cuda_archs", "triton", "gpu"):
        assert key in info
    assert info["cpu_targets"][0] == "scalar"
    assert set(info["cpu_targets_supported"]) <= set(info["cpu_targets"])
    assert info["cpu_target"] in info["cpu_targets_supported"]
    if info["cuda"]:
        assert info["cuda_archs"]


def test_cli_info_json():
    r = subprocess.run([sys.executable, "-m", "pyperfcore", "info", "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cpu_targets"][0] == "scalar"


def test_forced_target_env():
    for t in pyperfcore.build_info()["cpu_targets_supported"]:
        r = _run("import pyperfcore; print(pyperfcore.get_cpu_target())", {"PYPERFCORE_CPU_TARGET": t})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == t


def test_forced_target_unknown_or_unsupported_is_error():
    r = _run("import pyperfcore; pyperfcore.get_cpu_target()", {"PYPERFCORE_CPU_TARGET": "avx1024"})
    assert r.returncode != 0 and "not a CPU target" in r.stderr + r.stdout or "unknown CPU target" in r.stderr
    with pytest.raises(ValueError, match="unknown CPU target"):
        pyperfcore.set_cpu_target("neon9")
    unsupported = [t for t in pyperfcore.build_info()["cpu_targets"] if t not in pyperfcore.build_info()["cpu_targets_supported"]]
    for t in unsupported:
        with pytest.raises(ValueError, match="not supported"):
            pyperfcore.set_cpu_target(t)


def test_cpu_target_context_restores():
    before = pyperfcore.get_cpu_target()
    with pyperfcore.cpu_target("scalar"):
        assert pyperfcore.get_cpu_target() == "scalar"
    assert pyperfcore.get_cpu_target() == before


def test_num_threads_defaults_and_setting():
    r = _run("import pyperfcore; print(pyperfcore.get_num_threads())", {"PYPERFCORE_NUM_THREADS": "3", "OMP_NUM_THREADS": "5"})
    assert r.stdout.strip() == "3"
    env = {"OMP_NUM_THREADS": "5"}
    r = _run("import os; os.environ.pop('PYPERFCORE_NUM_THREADS', None); import pyperfcore; print(pyperfcore.get_num_threads())", env)
    assert r.stdout.strip() == "5"
    old = pyperfcore.get_num_threads()
    pyperfcore.set_num_threads(4)
    assert pyperfcore.get_num_threads() == 4
    pyperfcore.set_num_threads(old)
    with pytest.raises(ValueError):
        pyperfcore.set_num_threads(0)
    with pytest.raises(TypeError):
        pyperfcore.set_num_threads(2.5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_survives_fork():
    code = (
        "import os, pyperfcore\n"
        "from pyperfcore._runtime import _core\n"
        "pyperfcore.set_num_threads(3)\n"
        "n = 1_000_000\n"
        "assert _core().parallel_sum_test(n) == n * (n - 1) // 2\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = _core().parallel_sum_test(n) == n * (n - 1) // 2\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert os.waitstatus_to_exitcode(status) == 0, status\n"
        "assert _core().parallel_sum_test(n) == n * (n - 1) // 2\n"
        "print('ok')\n"
    )
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_clean_exit_with_live_pool():
    r = _run("import pyperfcore\nfrom pyperfcore._runtime import _core\npyperfcore.set_num_threads(4)\n_core().parallel_sum_test(10**6)\n")
    assert r.returncode == 0, r.stderr


def test_cpp_package_files_installed():
    inc = Path(pyperfcore.get_include())
    assert (inc / "pyperfcore" / "quant" / "quant.hpp").is_file()
    cmake = Path(pyperfcore.get_cmake_dir())
    assert (cmake / "pyperfcoreConfig.cmake").is_file()
    assert any((cmake.parent.parent.parent / "lib").glob("libpyperfcore_core.a"))


def test_kernels_package_importable_without_triton_import():
    import pyperfcore.kernels as k

    assert Path(k.__file__).name == "__init__.py"
    assert (Path(k.__file__).parent / "quant.py").is_file()


def test_backend_names_and_unavailable_reason():
    from pyperfcore import _backends, quant  # noqa: F401  (quant registers its backends on import)

    assert set(_backends.backends_for("quantize")) == {"reference", "cpu", "cuda", "triton"}
    why = _backends.available("quantize", "cuda")
    if not pyperfcore.build_info()["cuda"]:
        assert "not built" in why
    x = np.ones((2, 2), np.float32)
    with pytest.raises(pyperfcore.BackendUnavailable):
        if pyperfcore.build_info()["cuda"]:
            raise pyperfcore.BackendUnavailable("numpy input on cuda")  # cuda takes only CUDA tensors
        from pyperfcore import quant

        quant.quantize(x, backend="cuda")


def test_backend_check_success_is_cached_failure_is_rechecked(monkeypatch):
    from pyperfcore import _backends

    calls = {"n": 0, "ok": False}

    def check():
        calls["n"] += 1
        return None if calls["ok"] else "not yet"

    monkeypatch.setitem(_backends._CHECKS, "triton", check)
    monkeypatch.setattr(_backends, "_PASSED", set())
    assert _backends._check("triton") == "not yet"
    assert _backends._check("triton") == "not yet"
    assert calls["n"] == 2  # a failure is checked again (its cause may be fixed at run time)
    calls["ok"] = True
    assert _backends._check("triton") is None
    assert _backends._check("triton") is None
    assert calls["n"] == 3  # a success is remembered
