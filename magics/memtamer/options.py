"""%shrink's options: which action takes which, unknown or misplaced ones
refused, and codec, level and rtol passed to _core, which checks them and
fills in its defaults."""

import os

from IPython.core.error import UsageError

from . import _core

# The actions and the options each takes: C's table (kernelext/actions.c),
# the one list of them.
_TABLE = _core.shrink_actions()
SHRINK_ACTIONS = {name: action for name, action in _TABLE["actions"].items() if action["shrink"]}
_OPTIONS = {name: option for name, option in _TABLE["options"].items() if option["shrink"]}
# action -> the options %shrink takes with it
ACTION_OPTIONS = {name: set(action["options"]) & set(_OPTIONS)
                  for name, action in SHRINK_ACTIONS.items()}
# A switch is off unless given; a value left None is _core.shrink_options's
# to fill in; downcast's to is auto (the values choose).
DEFAULTS = {name: False if option["switch"] else None for name, option in _OPTIONS.items()}
DEFAULTS["to"] = "auto"


def parse_options(action, given):
    """The options action runs with: given ({option: value or None}) over
    the defaults; UsageError says what to write instead."""
    if action not in ACTION_OPTIONS:
        guess = _core.closest(action, list(ACTION_OPTIONS))
        raise UsageError(f"%shrink: unknown action {action!r}; "
                         f"{f'did you mean {guess}? ' if guess else ''}use one of "
                         f"{', '.join(ACTION_OPTIONS)}")
    allowed = ACTION_OPTIONS[action]
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
