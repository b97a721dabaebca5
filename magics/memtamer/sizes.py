"""Byte sizes for people: parse "512MiB" / "1.5G" / "80%", format 1.9 GiB."""

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text):
    """Bytes in a size such as '512MiB', '1.5G', '2e9' is not accepted.

    Raises ValueError with what was expected."""
    if str(text).strip().startswith("-"):
        raise ValueError(f"{text!r} is negative: a size is a positive number with an optional "
                         "unit, like 512MiB, 1.5GiB, 800MB or 2G")
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(
            f"{text!r} is not a size: write a number with an optional unit, "
            "like 512MiB, 1.5GiB, 800MB or 2G"
        )
    return int(float(match.group(1)) * _UNITS[unit])


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


def parse_share(text):
    """('percent', 80.0) for '80%', else ('bytes', n) as parse_size gives.

    Raises ValueError with what was expected."""
    match = _PERCENT.match(str(text))
    if match:
        percent = float(match.group(1))
        if not 0 < percent <= 100:
            raise ValueError(f"{text!r} is not a share of memory: write a percentage above 0 "
                             "and at most 100, like 80%")
        return "percent", percent
    try:
        return "bytes", parse_size(text)
    except ValueError as exc:
        if str(text).strip().startswith("-"):
            raise
        raise ValueError(f"{text!r} is neither a size nor a percentage: write e.g. 8GiB, "
                         "1500MiB or 80%") from None


def format_size(n, signed=False):
    """'1.9 GiB', '760 MiB', '12 KiB', '0 B'; '+' in front when signed."""
    if n is None:
        return "n/a"
    sign = ("-" if n < 0 else "+") if signed else ("-" if n < 0 else "")
    n = abs(n)
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale * 0.995:  # 1,073,549,312 B reads "1.0 GiB", not "1024 MiB"
            value = n / scale
            text = f"{value:.1f}" if value < 10 else f"{value:.0f}"
            return f"{sign}{text} {unit}"
    return f"{sign}{n} B"
