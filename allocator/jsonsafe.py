"""Strict JSON for manifests, reports and ``--json`` output.

Strict JSON has no NaN or Infinity, yet the loss ratio of a user with no net assets is +inf, and
results carry numpy scalars, tuples, datetimes and paths. One conversion serves every writer so
that the same value always reads the same way: NaN becomes ``null``, infinities ``"inf"`` and
``"-inf"``, datetimes ISO 8601 strings, paths strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any


def json_safe(obj: Any) -> Any:
    """``obj`` with every value made representable in strict JSON (raises ``TypeError`` if not)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (datetime, date)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return json_safe(obj.tolist())
    raise TypeError(f"a value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def dumps(obj: Any, *, sort_keys: bool = True) -> str:
    """Canonical strict JSON text: sorted keys (unless ``sort_keys=False``, for output whose
    insertion order means something), indent 2, no trailing newline."""
    return json.dumps(json_safe(obj), sort_keys=sort_keys, indent=2, allow_nan=False)
