# SPDX-License-Identifier: GPL-2.0-only
"""Plots of `uffdwp bench snapshot` results (their JSON), one run or several side by side.

Each panel shows one figure against the write rate, one line per method (the median over the
runs given, each run's value as a dot), or the headline ratios per run beside the targets the
issue set for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import median


def _rate_key(rate: int) -> float:  # idle first, max (0) last, the others by value
    return -1 if rate < 0 else float("inf") if rate == 0 else rate


def _rate_label(rate: int) -> str:
    return {-1: "idle", 0: "max"}.get(rate, f"{rate:,}")


def _values(results: Sequence[dict], method: str, pattern: str, rate: int, key: str,
            writers: int) -> list[float]:
    """Per result, the median of *key* over that result's runs of the cell."""
    out = []
    for res in results:
        vals = [r[key] for r in res["runs"] if r["method"] == method and r["pattern"] == pattern
                and r["rate"] == rate and (rate < 0 or r["writers"] == writers)
                and r.get(key) is not None]
        if vals:
            out.append(median(vals))
    return out


PANELS = [("seconds", "snapshot time (s)", "log"),
          ("size_ratio", "image / non-zero memory", "log"),
          ("throughput_ratio", "writer stores/s in its window / undisturbed", "linear"),
          ("pause_ms", "writers stopped (ms): stop-and-copy", "log")]
TARGETS = {"idle / plain": 0.8, "max / idle (1 writer)": 1.2, "rt median": 1.1, "rt p99": 1.1}


def _headline(res: dict, pattern: str) -> dict[str, float | None]:
    r = res.get("ratios", {})
    rt = r.get("roundtrip_over_reference") or {}
    by_writers = r.get("time_max_over_idle", {}).get(pattern, {})
    out = {"idle / plain": r.get("idle_throughput_over_plain", {}).get(pattern)}
    for name, value in by_writers.items():
        out[f"max / idle ({name})"] = value
    out["rt median"] = rt.get("median")
    out["rt p99"] = rt.get("p99")
    return out


def _by_rate(ax, results, rates, method, pattern, key, writers, marker="o", label=None):
    """One line through the medians over *results*, each result's value a dot of its color."""
    per_rate = [_values(results, method, pattern, rate, key, writers) for rate in rates]
    xs = [i for i, v in enumerate(per_rate) if v]
    (line,) = ax.plot(xs, [median(per_rate[i]) for i in xs], marker=marker,
                      label=label or method)
    for i, vals in enumerate(per_rate):
        ax.scatter([i] * len(vals), vals, s=12, alpha=0.5, marker=marker,
                   color=line.get_color())


def plot(results: Sequence[dict], directory: str | Path, pattern: str = "random") -> list[Path]:
    """PNG of the figures of *results* (as BenchResult.as_dict() gives them) for *pattern*."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    writers = results[0]["writers"][0]
    rates = sorted({r["rate"] for res in results for r in res["runs"]}, key=_rate_key)
    methods = list(dict.fromkeys(r["method"] for res in results for r in res["runs"]))
    labels = [_rate_label(r) for r in rates]
    fig, axes = plt.subplots(2, 4, figsize=(22, 9))
    flat = list(axes.flat)
    for ax, (key, title, _) in zip(flat[:4], PANELS):
        for method in methods:
            _by_rate(ax, results, rates, method, pattern, key, writers)
        ax.set_title(title, fontsize=10)
    ax = flat[4]
    for key, marker in (("fault_p50_us", "o"), ("fault_p99_us", "s")):
        _by_rate(ax, results, rates, "uffd-wp", pattern, key, writers, marker,
                 f"uffd-wp {key[6:9]}")
    ax.set_title("uffd-wp: stall of the stores that waited on a WP fault (µs, exact)",
                 fontsize=10)
    for ax, scale in zip(flat[:5], [p[2] for p in PANELS] + ["log"]):
        ax.set_xticks(range(len(rates)), labels)
        ax.set_xlabel("stores/s per writer")
        if scale == "log" and not any(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            scale = "linear"  # nothing to place on a log axis (e.g. no pause at all)
        ax.set_yscale(scale)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)

    ax = flat[5]
    names = list(dict.fromkeys(n for res in results for n in _headline(res, pattern)))
    width = 0.8 / max(1, len(results))
    for k, res in enumerate(results):
        vals = [_headline(res, pattern).get(n) or 0.0 for n in names]
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=f"run {k + 1}")
    for i, n in enumerate(names):
        if n in TARGETS:
            ax.hlines(TARGETS[n], i - 0.1, i + 0.9, colors="red", linestyles="dashed")
    ax.set_xticks([i + 0.4 for i in range(len(names))], names, rotation=20, fontsize=8)
    ax.set_title(f"headline ratios per run ({pattern}; dashed: the issue's targets)",
                 fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)

    ax = flat[6]
    for j, pat in enumerate(sorted(results[0]["plain"])):
        for k, res in enumerate(results):
            bar = res["plain"][pat]
            mibs = [bar["nonzero_bytes"] / s / 2**20 for s in bar["samples_s"]]
            ax.scatter([k + 0.2 * j] * len(mibs), mibs, s=14, color=f"C{j}",
                       label=pat if k == 0 else None)
            ax.hlines(bar["nonzero_bytes"] / bar["seconds"] / 2**20, k + 0.2 * j - 0.08,
                      k + 0.2 * j + 0.08, color=f"C{j}")
    ax.set_xticks(range(len(results)), [f"run {k + 1}" for k in range(len(results))])
    ax.set_title("plain bar: each write(2) run (dots) and their median (MiB/s)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)

    ax = flat[7]
    for j, kind in enumerate(("4k", "thp")):
        vals = [((res.get("protect") or {}).get("ms_per_gib") or {}).get(kind) or 0.0
                for res in results]
        ax.bar([k + 0.4 * j for k in range(len(results))], vals, 0.4, label=kind)
    ax.set_xticks([k + 0.2 for k in range(len(results))],
                  [f"run {k + 1}" for k in range(len(results))])
    ax.set_yscale("log")
    ax.set_title("protect cost (ms per GiB): 4 KiB pages vs THP-backed", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)

    size = results[0]["size"] >> 20
    fig.suptitle(f"uffdwp bench snapshot: {size} MiB, {writers} writer(s), pattern {pattern}, "
                 f"{len(results)} run(s)")
    fig.tight_layout()
    path = directory / f"snapshot-bench-{pattern}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [path]


__all__ = ["plot"]
