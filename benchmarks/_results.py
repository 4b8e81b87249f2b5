"""Write one benchmark's figures into its own section of ``benchmarks/RESULTS.md``.

Each benchmark script owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; re-running it
replaces that section only, so scripts never overwrite each other's figures.
"""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nWritten by the scripts in `benchmarks/`; each section says the command that made it.\n"


def machine() -> str:
    """A one-line description of the machine the figures come from."""
    import os

    try:
        import torch as th

        gpu = th.cuda.get_device_name(0) if th.cuda.is_available() else "no GPU"
    except ImportError:  # pragma: no cover - torch is a core dependency
        gpu = "torch missing"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, Python {platform.python_version()}"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the section ``name`` of ``RESULTS.md`` with ``body`` (markdown)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = f"<!-- BEGIN {name} -->\n{body.rstrip()}\n\n_Measured {stamp} on {machine()}._\n<!-- END {name} -->"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- BEGIN {re.escape(name)} -->.*?<!-- END {re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
