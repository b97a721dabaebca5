"""The C files' floors: README's Layout table lists kernelext/ from the
ground floor up, and no file may include the header of a file above it
(a call up a floor, or a circle)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def floors():
    return re.findall(r"^\| `kernelext/(\w+)\.c` \|", read("README.md"), re.M)


def includes(name):
    """The concern headers kernelext/NAME.c includes (its own left out)."""
    found = re.findall(r'#include "memtamer/(\w+)\.h"', read(f"kernelext/{name}.c"))
    return [header for header in found if header != name]


def test_the_layout_table_lists_every_c_file_once():
    listed = floors()
    on_disk = sorted(f[:-2] for f in os.listdir(os.path.join(ROOT, "kernelext"))
                     if f.endswith(".c"))
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


def test_no_c_file_includes_a_file_above_it():
    listed = floors()
    floor = {name: i for i, name in enumerate(listed)}
    upward = [f"{name}.c includes {header}.h" for name in listed for header in includes(name)
              if header in floor and floor[header] > floor[name]]
    assert upward == []


def test_the_check_sees_an_upward_include():
    # The test above reads real includes: module.c, the top floor, includes
    # the files below it, so the rule has something to hold.
    listed = floors()
    assert listed[-1] == "module"
    assert set(includes("module")) & set(listed[:-1])
