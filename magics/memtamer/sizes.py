"""Byte sizes for people: 1.9 GiB.  Reading sizes is _core.parse_size's and
_core.parse_level's (one grammar, one wording, shared with the rules file)."""

from . import _core


def format_size(n, signed=False):
    """'1.9 GiB', '760 MiB', '12 KiB', '0 B'; '+' in front when signed; 'n/a'
    for None.  The wording is _core's, the same as in the messages C writes."""
    if n is None:
        return "n/a"
    return _core.format_size(int(n), signed)
