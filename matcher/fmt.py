"""Number formatting shared by every table matcher prints."""

from __future__ import annotations

import math


def si(value: float | None, unit: str = "", digits: int = 3) -> str:
    """1234567 -> '1.23M'; None -> '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale * _rounds_up_from(digits):
            return f"{value / scale:.{digits}g}{prefix}{unit}"
    return f"{value:.{digits}g}{unit}"


def _rounds_up_from(digits: int) -> float:
    """The fraction of a unit from which `digits` significant digits of the unit below read 1000 (999.6k
    would print as "1e+03k"), so the value is shown in the larger unit instead ("1M")."""
    return 1 - 0.5 * 10**-digits


def count(value: int | None) -> str:
    """Exact integer with thousands separators, for parameter counts."""
    return "-" if value is None else f"{value:,}"


def params(value: int | None) -> str:
    """Parameters in the field's usual short form: 1.99B, 255.6K."""
    if value is None:
        return "-"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.4g}{suffix}"
    return str(value)


def bytes_(value: float | None) -> str:
    """Binary units: 1.50 GiB."""
    if value is None:
        return "-"
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(value) >= scale / 1024 * 999.5:  # 999.5 of the unit below would print as "1e+03"
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def duration(seconds: float | None) -> str:
    """3725 -> '1h02m'; None -> '-'."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:.0f}s"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def rel_diff(measured: float | None, analytic: float | None) -> float | None:
    """(measured - analytic) / analytic; 0 when both are 0; None when either is missing."""
    if measured is None or analytic is None:
        return None
    if analytic == 0:
        return 0.0 if measured == 0 else math.inf
    return (measured - analytic) / analytic


def percent(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value * 100:+.{digits}f}%"


def ratio(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"
