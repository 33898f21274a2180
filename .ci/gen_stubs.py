"""Generate the type stubs of pyperfcore._core with pybind11-stubgen, or check they are current.

    python .ci/gen_stubs.py --write   # regenerate pyperfcore/_core.pyi
    python .ci/gen_stubs.py --check   # fail if the checked-in stubs differ from a fresh generation
"""
import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "pyperfcore" / "_core.pyi"


def generate() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pybind11_stubgen", "pyperfcore._core", "-o", tmp, "--numpy-array-use-type-var"],
            check=True,
            cwd=tmp,
        )
        return (Path(tmp) / "pyperfcore" / "_core.pyi").read_text()


def main() -> int:
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    args = ap.parse_args()
    fresh = generate()
    if args.write:
        TARGET.write_text(fresh)
        print(f"wrote {TARGET}")
        return 0
    current = TARGET.read_text() if TARGET.exists() else ""
    if current != fresh:
        sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "checked-in", "generated"))
        print("\n_core.pyi is out of date: run `make stubs` and commit the result", file=sys.stderr)
        return 1
    print("stubs up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
