"""Run inside a clean venv holding only the repaired wheel (and numpy)."""
import importlib.resources
import subprocess
import sys

import numpy as np

import pyperfcore
from pyperfcore import quant

subprocess.run([sys.executable, "-m", "pyperfcore", "info"], check=True)
x = np.random.default_rng(0).standard_normal((64, 300)).astype(np.float32)
q, s = quant.quantize(x, axis=0)
ref_q, ref_s = quant.quantize(x, axis=0, backend="reference")
assert np.array_equal(q, ref_q) and np.array_equal(s, ref_s)
# The wheel carries the Triton kernels as pyperfcore.kernels and the C++ package files.
import pyperfcore.kernels  # noqa: E402

assert importlib.resources.files("pyperfcore.kernels").joinpath("quant.py").is_file()
assert "triton" not in sys.modules and "torch" not in sys.modules
print("include:", pyperfcore.get_include())
print("cmake:", pyperfcore.get_cmake_dir())
print("wheel check ok:", pyperfcore.__version__, pyperfcore.get_cpu_target())
