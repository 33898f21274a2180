"""Prints a short table of a pytest-benchmark JSON file: median per benchmark and the ratio to
the fastest peer of its group; then, for the GPU linear-layer groups, the issue's speed targets
with the measured ratio of the shipped default against its peer, met or not."""
import json
import re
import sys
from collections import defaultdict

# (group pattern, shipped default by M, peer by M, target ratio peer / ours, what it is)
# W8A8: at least 1.3x _int_mm + the same epilogue; where _int_mm refuses (M <= 16), against fp16
# cuBLAS + GELU. FP16 weights with the fused epilogue: at least as fast as cuBLAS + GELU (fp16 in
# and out on both sides). At M <= 16 the default is the SMALL_M_PATH pick ("auto" variants).
TARGETS = [
    (r"gpu-w8a8-linear-(\d+)x(\d+)x(\d+)-gelu",
     lambda m: "pyperfcore_auto_w8a8" if m <= 16 else "pyperfcore_triton_w8a8",
     lambda m: "torch_fp16_addmm+gelu" if m <= 16 else "torch_int_mm+epilogue", 1.3, "W8A8 linear"),
    (r"gpu-half-linear-(\d+)x(\d+)x(\d+)-gelu",
     lambda m: "pyperfcore_auto_fp16_out16" if m <= 16 else "pyperfcore_triton_fp16_out16",
     lambda m: "torch_fp16_addmm+gelu", 1.0, "FP16 linear"),
]


def _variant(name: str) -> str:
    """'test_gpu_w8a8_linear[pyperfcore_auto_w8a8-16]' -> 'pyperfcore_auto_w8a8' (the ids are
    name-M); a name without parameters as is."""
    g = re.search(r"\[(.*)\]$", name)
    return g.group(1).rsplit("-", 1)[0] if g else name


def verdicts(groups):
    """One line per GPU linear group that has both sides: ours, the peer, ratio, target, met."""
    out = []
    for pattern, ours_of, peer_of, target, what in TARGETS:
        found = []
        for group, rows in groups.items():
            g = re.fullmatch(pattern, group)
            if g:
                found.append((int(g.group(1)), group, {_variant(name): med for name, med, _ in rows}))
        for m, group, med in sorted(found):
            ours, peer = ours_of(m), peer_of(m)
            if ours not in med and m <= 16:  # (a run from before the small-M pick: the Triton default)
                ours = ours.replace("_auto_", "_triton_")
            if ours not in med or peer not in med:
                out.append(f"  {what} M={m}: no {ours if ours not in med else peer} in this run")
                continue
            ratio = med[peer] / med[ours]
            out.append(f"  {what} M={m}: {ours} {med[ours] * 1e3:.4f} ms vs {peer} {med[peer] * 1e3:.4f} ms = "
                       f"{ratio:.2f}x (target {target:.1f}x): {'met' if ratio >= target else 'NOT met'}")
    return out


def main(path: str) -> None:
    try:
        data = json.load(open(path))
    except (OSError, ValueError) as exc:
        print(f"no benchmark results ({exc})")
        return
    groups = defaultdict(list)
    for b in data.get("benchmarks", []):
        groups[b["group"]].append((b["name"], b["stats"]["median"], b.get("extra_info", {})))
    for group, rows in sorted(groups.items()):
        print(f"{group}")
        best = min(m for _, m, _ in rows)
        for name, med, extra in sorted(rows, key=lambda r: r[1]):
            rates = [(k, v) for k, v in extra.items() if isinstance(v, (int, float)) and "/s" in k]
            gbs = f"{rates[0][1]:10.1f} {rates[0][0].split()[0]}" if rates else ""
            print(f"  {name:<48} {med * 1e3:10.3f} ms  x{med / best:6.2f}  {gbs}")
    lines = verdicts(groups)
    if lines:
        print("GPU speed targets (peer median / shipped default median, one synchronized call each):")
        print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
