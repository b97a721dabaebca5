"""The one table of %shrink's and the rules' actions (kernelext/actions.c):
every Python side derives from it, and an action added on one side only
fails here."""

import pytest
from IPython.core.error import UsageError

from memtamer import _core, actions, magics, options, rules, shrinker

TABLE = _core.shrink_actions()
SHRINK = [name for name, action in TABLE["actions"].items() if action["shrink"]]
RULES = [name for name, action in TABLE["actions"].items() if action["rules"]]


def test_every_shrink_action_of_the_table_is_dispatched_and_no_other():
    per_name, kernel = set(actions.ACTIONS), set(shrinker.KERNEL_ACTIONS)
    assert not per_name & kernel
    assert per_name | kernel == set(SHRINK)


def test_every_option_of_the_magic_is_in_the_table_and_no_other():
    parser = magics.MemtamerMagics.shrink.parser
    magic_options = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    assert magic_options == {name for name, o in TABLE["options"].items() if o["shrink"]}
    # A switch is a store_true flag, a value takes one.
    for a in parser._actions:
        if a.dest in magic_options:
            assert (a.nargs == 0) == TABLE["options"][a.dest]["switch"], a.dest


# A good value of each option that takes one (a switch's is True).
VALUES = {"to": "float32", "rtol": 0.01, "codec": "lz4", "level": 1, "dir": "/scratch"}


def test_each_action_takes_the_options_of_the_table_and_refuses_the_others():
    for name in SHRINK:
        takes = set(TABLE["actions"][name]["options"])
        for option, info in TABLE["options"].items():
            if not info["shrink"]:
                continue
            value = True if info["switch"] else VALUES[option]
            if option in takes:
                assert options.parse_options(name, {option: value})[option] == value
            else:
                with pytest.raises(UsageError, match=f"--{option.replace('_', '-')} applies to"):
                    options.parse_options(name, {option: value})


@pytest.mark.parametrize("option, users", [("narrow", "downcast and pack"),
                                           ("discard", "reattach"),
                                           ("copy", "compress and spill and downcast and pack")])
def test_a_misplaced_option_names_the_actions_that_take_it(option, users):
    with pytest.raises(UsageError) as caught:
        options.parse_options("restore", {option: True})
    assert str(caught.value) == \
        f"%shrink restore: --{option} applies to {users}, not restore"


def test_an_unknown_action_is_refused_with_the_closest_and_the_list():
    with pytest.raises(UsageError) as caught:
        options.parse_options("compres", {})
    assert str(caught.value) == (f"%shrink: unknown action 'compres'; did you mean compress? "
                                 f"use one of {', '.join(SHRINK)}")
    with pytest.raises(UsageError) as caught:
        options.parse_options("squash", {})
    assert "did you mean" not in str(caught.value)


def test_the_magic_help_lists_every_action_with_its_line():
    text = magics.MemtamerMagics.shrink.__doc__
    for name in SHRINK:
        first_words = " ".join(TABLE["actions"][name]["help"].split()[:4])
        assert f"\n{name}" in text and first_words in " ".join(text.split()), name
    assert " | ".join(SHRINK) in " ".join(text.split())
    assert "{'option_strings'" not in text  # a % in an option's help would be formatted


def test_the_python_api_docstring_lists_every_action_with_its_options():
    text = " ".join(shrinker.shrink.__doc__.split())
    for name in SHRINK:
        options_taken = ", ".join(sorted(options.ACTION_OPTIONS[name]))
        assert f"{name}({options_taken}):" in text


def test_every_rule_action_is_run_by_the_rules_or_by_shrink_and_no_other():
    own = set(rules.Rules.OWN_ACTIONS)
    assert not own & set(SHRINK)
    assert own | (set(RULES) & set(SHRINK)) == set(RULES)


def test_every_rule_action_says_what_it_did():
    assert set(RULES) <= set(rules.PAST_TENSE)
    assert all(rules.PAST_TENSE[name] for name in RULES)


def test_a_rule_without_do_lists_the_rule_actions_of_the_table():
    errors = _core.rules_check(b"version: 1\nrules:\n  - name: x\n")
    assert errors[0][2] == f"this rule has no do: add do: with one of {', '.join(RULES)}"
    # %shrink's own actions are not a rule's
    errors = _core.rules_check(b"version: 1\nrules:\n  - name: x\n    do: trim\n")
    assert "do: unknown value 'trim'" in errors[0][2]


def test_every_rule_option_is_refused_under_an_action_that_does_not_take_it(tmp_path):
    good = dict(VALUES, dir=tmp_path)
    for option, info in TABLE["options"].items():
        if not info["rules"]:
            continue
        if info["switch"]:
            good[option] = "true"
        owners = [name for name in RULES if option in TABLE["actions"][name]["options"]]
        other = next(name for name in RULES if name not in owners)
        errors = _core.rules_check(
            f"version: 1\nrules:\n  - name: x\n    do: {other}\n    {option}: {good[option]}\n"
            .encode())
        said = [message for _, _, message in errors if message.startswith(f"{option}:")]
        assert said == [f"{option}: applies to do: {' or '.join(owners)}, not do: {other}; "
                        "remove it"], errors


def test_reattach_through_the_python_api_is_a_usage_error_not_a_key_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMTAMER_SPILL_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="%shrink reattach: nothing is offered"):
        shrinker.run(None, {}, "reattach", ["x"], {})
    with pytest.raises(UsageError, match="--dry-run does not apply"):
        shrinker.run(None, {}, "reattach", ["x"], {"dry_run": True})
