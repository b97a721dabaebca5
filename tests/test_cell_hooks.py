"""The cell callbacks (hooks.c) in a terminal shell: what a broken piece
of the extension, a cell kept out of the history and a Ctrl-C do to them."""

import json
import subprocess
import sys
import textwrap

PRELUDE = textwrap.dedent("""
    import json, sys
    from IPython.terminal.interactiveshell import TerminalInteractiveShell
    shell = TerminalInteractiveShell.instance(colors="nocolor")
    shell.run_cell("%load_ext memtamer", store_history=True)
    import memtamer
    extension = memtamer._active
    def cells():
        return memtamer._core.cells()
""")


def run(body):
    result = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out, _, figures = result.stdout.partition("FIGURES")
    return out, json.loads(figures), result.stderr


def test_a_broken_notice_setting_is_reported_once_and_every_cell_is_still_measured():
    out, figures, err = run("""
        extension.notice_threshold = "512 MiB"  # a careless edit: not a number of bytes
        for n in range(3):
            shell.run_cell(f"blob{n} = bytearray({2**24})", store_history=True)
        print("FIGURES" + json.dumps([c["retained"] for c in cells()[-3:]]))
    """)
    assert err.count("memtamer: cell_end failed (TypeError") == 1, err
    assert "figures for this cell may be missing" in err
    assert all(r >= 15 * 2**20 for r in figures)  # each cell's 16 MiB


def test_a_cell_kept_out_of_the_history_is_measured_without_a_number():
    out, figures, err = run("""
        shell.run_cell("x = 1", store_history=True)
        stored = cells()[-1]["cell"]
        shell.run_cell("quiet = bytearray(2**24)", store_history=False)
        shell.run_cell("y = 2", store_history=True)
        print("FIGURES" + json.dumps([stored] + [(c["cell"], c["retained"]) for c in cells()[-2:]]))
    """)
    stored, (quiet, quiet_retained), (after, _) = figures
    assert quiet is None and quiet_retained >= 15 * 2**20
    assert after == stored + 1
    assert "memtamer" not in err


def test_ctrl_c_inside_a_callback_goes_to_the_shell_and_is_not_taken_for_a_failure():
    # A KeyboardInterrupt is not a failure of memtamer's: it goes on up to
    # the shell (which shows it and runs the cell), and the cell is measured.
    out, figures, err = run("""
        class Interrupting:
            enabled = True
            thread = handle = None
            def begin(self):
                raise KeyboardInterrupt
        live, extension.live = extension.live, Interrupting()
        shell.run_cell("a = 1", store_history=True)
        stopped = cells()[-1]
        extension.live = live
        shell.run_cell("b = bytearray(2**24)", store_history=True)
        print("FIGURES" + json.dumps(["a" in shell.user_ns, stopped["status"],
                                      stopped["first_line"], cells()[-1]["retained"]]))
    """)
    ran, status, line, retained = figures
    assert ran and status == "ok" and line == "a = 1"
    assert "KeyboardInterrupt" in out  # the shell's traceback
    assert retained >= 15 * 2**20
    assert "memtamer" not in err


def test_a_records_first_line_is_the_first_line_of_the_stripped_source():
    sources = ["x = 1", "  \n\t x = 1  \n y = 2 \n", "x = 1   ", "\u3000é = 'ü'\u3000\n",
               "a" * 150, "# é" * 60 + "\nrest", "line\r\nnext", "🙂" * 120]
    out, figures, err = run(f"""
        lines = []
        for source in {sources!r}:
            shell.run_cell(source, store_history=True)
            lines.append(cells()[-1]["first_line"])
        print("FIGURES" + json.dumps(lines))
    """)
    assert figures == [s.strip().split("\n")[0][:100] for s in sources]
