"""Prints a short table of a pytest-benchmark JSON file: median per benchmark and the ratio to
the fastest peer of its group."""
import json
import sys
from collections import defaultdict


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


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
