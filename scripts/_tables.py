"""Shared plumbing of the benchmark table scripts (bench_dp.py, table_*.py): the machine and
version line, load-average sampling, what a run records about itself, and publishing a table
(printed, its results as JSON, one marked block of docs/benchmarks.md replaced)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "benchmarks.md"


def versions() -> str:
    """One line: Python, TVM, tvm-ffi, numpy, ortools (what is installed)."""
    from importlib import metadata

    parts = [f"Python {platform.python_version()}"]
    for dist in ("apache-tvm", "apache-tvm-ffi", "numpy", "ortools", "highspy", "pyscipopt"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(parts)


def machine() -> str:
    """One line: CPU model and core count, memory."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        memory = ""
    return f"{os.cpu_count()} cores ({model}){memory}, {platform.system()} {platform.release()}"


def load_average() -> float:
    """The 1-minute load average now (NaN where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def today() -> str:
    return datetime.date.today().isoformat()


class LoadSampler:
    """Samples the 1-minute load average every few seconds in a thread (min / mean / max)."""

    def __init__(self, every: float = 5.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        s = self.samples
        return f"min {min(s):.1f}, mean {sum(s) / len(s):.1f}, max {max(s):.1f} ({len(s)} samples)"


def shown(path: str | Path) -> str:
    """``path`` relative to the repository where it lies inside it (for notes in the docs)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_record(script: str, argv: list[str] | None, load_start: float, started: float,
               **fields) -> dict:
    """What a table run records about itself (its results' ``"meta"``): the command that ran
    ``scripts/<script>`` with ``argv`` (None: this process's arguments), date, machine, versions,
    the load average at ``load_start`` and now, the seconds since ``started``
    (``time.perf_counter()``), then ``fields``."""
    arguments = sys.argv[1:] if argv is None else argv
    return {
        "command": f"python scripts/{script} " + " ".join(arguments),
        "date": today(),
        "machine": machine(),
        "versions": versions(),
        "load_start": load_start,
        "load_end": load_average(),
        "seconds": time.perf_counter() - started,
        **fields,
    }


def rendered_note(results: str | Path) -> str:
    """The note under a table rendered again from a run's saved results."""
    return f"(Rendered from the run's results, `{shown(results)}`.)"


def publish(name: str, heading: str, body: str, doc: Path | None, results: Path | None = None,
            record: dict | None = None) -> None:
    """Print a table; write ``record`` as JSON to ``results`` (where given) and the table into
    block ``name`` of ``doc`` (None: not into the docs)."""
    print(body)
    if results is not None:
        results = Path(results)
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=1, default=str) + "\n")
    if doc is not None:
        write_block(name, heading, body, Path(doc))


def write_block(name: str, heading: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the block between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in ``path``
    with ``body``; if the markers are missing, append ``heading`` and the block at the end. The file
    is read right before writing (other scripts write other blocks)."""
    start, end = f"<!-- table:{name} -->", f"<!-- /table:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
