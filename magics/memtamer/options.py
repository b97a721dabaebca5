"""%shrink's options: which action takes which, unknown or misplaced ones
refused, and codec, level and rtol passed to _core, which checks them and
fills in its defaults."""

import os

from IPython.core.error import UsageError

from . import _core

# action -> the options it takes beyond dry_run
ACTION_OPTIONS = {
    "del": set(),
    "downcast": {"to", "rtol", "narrow", "copy"},
    "compress": {"codec", "level", "copy"},
    "restore": set(),
    "pack": {"narrow", "copy"},
    "spill": {"dir", "copy", "keep_in_memory", "keep_for_reattach"},
    "trim": set(),
    "reattach": {"discard"},
}
COMMON_OPTIONS = {"dry_run"}
# None: _core.shrink_options's default.
DEFAULTS = {"to": "auto", "rtol": None, "narrow": False, "codec": None, "level": None,
            "dir": None, "copy": False, "keep_in_memory": False, "keep_for_reattach": False,
            "discard": False, "dry_run": False}


def parse_options(action, given):
    """The options action runs with: given ({option: value or None}) over
    the defaults; UsageError says what to write instead."""
    if action not in ACTION_OPTIONS:
        raise UsageError(f"%shrink: unknown action {action!r}; use one of "
                         f"{', '.join(ACTION_OPTIONS)}")
    allowed = ACTION_OPTIONS[action] | COMMON_OPTIONS
    for key, value in given.items():
        if key not in DEFAULTS:
            raise UsageError(f"%shrink: unknown option {key!r}; options are {', '.join(sorted(DEFAULTS))}")
        if key not in allowed and value is not None and value != DEFAULTS[key]:
            users = [a for a, takes in ACTION_OPTIONS.items() if key in takes]
            raise UsageError(f"%shrink {action}: --{key.replace('_', '-')} applies to "
                             f"{' and '.join(users) or 'no action'}, not {action}")
    options = dict(DEFAULTS)
    options.update({k: v for k, v in given.items() if v is not None})
    try:
        options.update(_core.shrink_options(codec=options["codec"], level=options["level"],
                                            rtol=options["rtol"]))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"%shrink {action}: {exc}") from None
    if options["dir"]:
        options["dir"] = os.path.expanduser(options["dir"])
    return options
