"""Shared output helpers for the benchmark scripts: a machine header, fixed-width tables, a saved copy.

Each benchmark prints as it goes and writes the same text to ``benchmarks/results/<name>.txt`` (its
latest run), so a figure quoted in an issue can be traced to the machine and versions it came from.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return float("nan")


def code_version() -> str:
    """The git commit of the checkout, and which files under ``include/`` differ from it (uncommitted)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "include"], cwd=root, capture_output=True, text=True, timeout=10
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "git unknown"
    dirty = sorted(Path(line[3:]).name for line in changed if line.strip())
    return f"git {commit}" + (f" + uncommitted {','.join(dirty)}" if dirty else "")


def machine_header(title: str) -> str:
    """One line: title, UTC time, usable cores (``nproc``), RAM (GiB), CPU model, python and torch versions,
    1-minute load average (other tenants slow the timings), and the code's git commit."""
    import torch

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0))
    return (
        f"# {title} | {now} | nproc {cores} | RAM {_ram_gib():.1f} GiB | CPU {_cpu_model()} | "
        f"python {platform.python_version()} | torch {torch.__version__} ({torch.get_num_threads()} thread(s)) | "
        f"load {os.getloadavg()[0]:.1f} | {code_version()}"
    )


def mean_sd(values: Sequence[float]) -> str:
    """``"0.912 ± 0.031"`` over the finite values (sample sd, ddof=1; 0 for a single value)."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return "nan"
    sd = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return f"{x.mean():.3f} ± {sd:.3f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: int = 1) -> str:
    """A fixed-width text table: the first ``left`` columns left-aligned, the others right-aligned;
    floats to 3 places."""

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float | np.floating) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in pairs).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in text)])


class Report:
    """Prints lines as they come and keeps them, to be saved with ``save``."""

    def __init__(self, title: str) -> None:
        self.lines: list[str] = []
        self.add(machine_header(title))

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def save(self, path: str | os.PathLike | None) -> Path | None:
        """Write everything printed so far to ``path`` (folders created); ``None`` saves nothing."""
        if path is None:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
        print(f"(saved to {path})", flush=True)
        return path


def output_path(value: str, name: str) -> Path | None:
    """The ``--output`` option: ``"default"`` -> ``benchmarks/results/<name>.txt``, ``"none"`` -> None."""
    if value == "none":
        return None
    return RESULTS_DIR / f"{name}.txt" if value == "default" else Path(value)
