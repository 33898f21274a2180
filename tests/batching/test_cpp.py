"""The batching core used from C++ with no Python: compile a small program against it and run it."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_engine_from_cpp(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "engine_main"
    subprocess.run([cxx, "-std=c++17", "-O1", "-pthread", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tests/batching/cpp/engine_main.cpp"), str(ROOT / "csrc/batching/batching.cpp"),
                    "-o", str(exe)], check=True, timeout=240)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "bad 0" in out.stdout
    assert "call caller_runs 0 delay 0: " in out.stdout and "call caller_runs 1 delay 0: " in out.stdout  # Engine::call ran
    assert "push_many_poll bad 0" in out.stdout
    assert out.stdout.count("pipeline caller_runs") == 3  # engines nested on one thread


def test_native_probes_run():
    from pyperfcore._runtime import _core

    rate, mean = _core().batching_bench_engine(4, 16, 2000, 16, 0)
    assert rate > 0 and 1 <= mean <= 16
    rate, mean = _core().batching_bench_engine(4, 1, 2000, 16, 0, True)  # caller-runs mode
    assert rate > 0 and 1 <= mean <= 4
    for cr in (False, True):  # Engine::call (reserve_ids + call) per round trip
        rate, mean = _core().batching_bench_engine(4, 1, 2000, 16, 0, cr, True)
        assert rate > 0 and 1 <= mean <= 4
    assert _core().batching_bench_mutex_queue(4, 500, 16) > 0
