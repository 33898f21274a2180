"""Pure-numpy oracles every backend is checked against: slow, plain, obviously right.

Each capability keeps its oracles in ``tests/reference/<capability>.py``; they are
re-exported here so tests can write ``from tests.reference import quantize_int8``.
"""
import importlib
import pkgutil

__all__: list[str] = []
for _m in pkgutil.iter_modules(__path__):
    _mod = importlib.import_module(f"{__name__}.{_m.name}")
    for _name in getattr(_mod, "__all__", []):
        globals()[_name] = getattr(_mod, _name)
        __all__.append(_name)
