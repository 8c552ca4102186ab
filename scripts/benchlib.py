"""What the benchmark scripts share: their command line, fixed-width tables and the JSON they write.

Each script is run as `python scripts/NAME.py [--quick] [--out PATH]`; Python puts the script's folder
on the import path, which is how the scripts find this module.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(name: str, description: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{name}.py", description=(description or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, for a smoke test (well under a minute)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json",
                        help="where to write the figures as JSON (default: %(default)s)")
    return parser.parse_args()


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # NaN and infinity are not JSON; None says "no figure" without breaking strict parsers.
    path.write_text(json.dumps(_finite(payload), indent=2) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Right-aligned columns, each as wide as its widest cell."""
    cells = [list(headers)] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if math.isfinite(value) else "-"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"
