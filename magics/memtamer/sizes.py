"""Byte sizes for people: 1.9 GiB.  Reading sizes is _core.parse_size's and
_core.parse_level's (one grammar, one wording, shared with the rules file)."""


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
