"""The ledger learns what a cell changed from a dict watcher on the namespace
(3.12+) or by comparing the namespace with its snapshot in step (3.11):
every way a binding can change still reaches it, with the same provenance
a full scan gave."""


def names(kernel):
    return kernel.query("__import__('memtamer')._core.ledger()['names']")


def test_deleted_and_bound_again_in_one_cell_is_a_rebinding(kernel):
    made = kernel.run("again = list(range(1000))")["execution_count"]
    kernel.run("keep = 1")
    cell = kernel.run("del again\nagain = 'short'")["execution_count"]
    entry = names(kernel)["again"]
    assert entry["created_cell"] == made and entry["rebound_cell"] == cell
    assert entry["bytes"] == kernel.query("__import__('sys').getsizeof('short')")


def test_a_name_deleted_in_the_middle_leaves_the_names_after_it_alone(kernel):
    made = kernel.run("first = [1]\nmiddle = [2]\nlast = [3]")["execution_count"]
    kernel.run("del middle")
    ledger = names(kernel)
    assert "middle" not in ledger
    assert ledger["first"]["rebound_cell"] == made and ledger["last"]["rebound_cell"] == made


def test_a_variable_bound_to_a_function_leaves_the_ledger(kernel):
    kernel.run("shape = [0] * 100")
    kernel.run("def shape():\n    return 1")
    assert "shape" not in names(kernel)
    again = kernel.run("shape = (1, 2)")["execution_count"]
    assert names(kernel)["shape"]["created_cell"] == again


def test_reset_empties_it_and_what_comes_after_is_new(kernel):
    kernel.run("gone_soon = [1, 2, 3]")
    kernel.run("%reset -f")
    assert "gone_soon" not in names(kernel)
    cell = kernel.run("gone_soon = [4]")["execution_count"]
    assert names(kernel)["gone_soon"]["created_cell"] == cell


def test_a_push_into_the_hidden_namespace_makes_it_the_shells(kernel):
    kernel.run("tool = [1, 2]")
    assert "tool" in names(kernel)
    # The same object, pushed as the shell's own: user_ns does not change.
    kernel.run("get_ipython().push({'tool': tool}, interactive=False)")
    assert "tool" not in names(kernel)


def test_a_read_of_an_unchanged_variable_is_a_use(kernel):
    made = kernel.run("counted = [0] * 10")["execution_count"]
    kernel.run("other = 2")
    cell = kernel.run("len(counted)")["execution_count"]
    entry = names(kernel)["counted"]
    assert entry["last_used_cell"] == cell and entry["rebound_cell"] == made
    assert names(kernel)["other"]["last_used_cell"] is None



def test_the_names_read_are_those_of_the_code_that_ran(kernel):
    # An AST transformer of the user's renames a name: the code the shell
    # compiled reads `target`, the cell's source only `alias`.
    kernel.run("import ast\n"
               "class _Rename(ast.NodeTransformer):\n"
               "    def visit_Name(self, node):\n"
               "        return ast.copy_location(ast.Name('target', node.ctx), node) "
               "if node.id == 'alias' else node\n"
               "get_ipython().ast_transformers.append(_Rename())")
    made = kernel.run("target = [1, 2, 3]")["execution_count"]
    cell = kernel.run("len(alias)")["execution_count"]
    assert names(kernel)["target"]["last_used_cell"] == cell
    assert names(kernel)["target"]["created_cell"] == made
    kernel.run("get_ipython().ast_transformers.pop()")


def test_magics_that_compile_code_read_its_names(kernel):
    kernel.run("timed = [0] * 10\nlooped = [1] * 10")
    cell = kernel.run("%time len(timed)")["execution_count"]
    assert names(kernel)["timed"]["last_used_cell"] == cell
    cell = kernel.run("%%timeit -n1 -r1\nlen(looped)")["execution_count"]
    assert names(kernel)["looped"]["last_used_cell"] == cell


def test_unload_gives_the_shell_its_compiler_back(kernel):
    before = kernel.query("type(get_ipython().compile).__name__")
    kernel.run("%unload_ext memtamer")
    after = kernel.query("type(get_ipython().compile).__name__")
    kernel.run("%load_ext memtamer")
    assert before == "_RecordingCompiler" and after != before


def size_of(kernel, name):
    return kernel.query(f"__import__('sys').getsizeof({name})")


def test_names_bound_through_exec_and_globals_are_the_cells(kernel):
    cell = kernel.run("exec('by_exec = [None] * 40', globals())\n"
                      "globals()['by_globals'] = [None] * 50\n"
                      "globals().update(by_update=[None] * 60, other_update=(None,))\n"
                      "globals().setdefault('by_default', [None] * 70)")["execution_count"]
    ledger = names(kernel)
    for name in ("by_exec", "by_globals", "by_update", "other_update", "by_default"):
        assert ledger[name]["created_cell"] == cell, name
        assert ledger[name]["bytes"] == size_of(kernel, name), name
    rebound = kernel.run("exec('by_exec = \"text\"')\nglobals().pop('by_globals')\n"
                         "del globals()['by_update']")["execution_count"]
    ledger = names(kernel)
    assert ledger["by_exec"]["rebound_cell"] == rebound
    assert ledger["by_exec"]["created_cell"] == cell
    assert ledger["by_exec"]["bytes"] == size_of(kernel, "by_exec")
    assert "by_globals" not in ledger and "by_update" not in ledger
    assert ledger["other_update"]["rebound_cell"] == cell


def test_a_thread_that_rebinds_names_while_a_cell_runs(kernel):
    kernel.run("import threading\nthreaded = [0]\nuntouched = [1] * 10")
    made = names(kernel)["untouched"]["created_cell"]
    cell = kernel.run("def _swap():\n"
                      "    global threaded, from_thread\n"
                      "    threaded = list(range(3000))\n"
                      "    from_thread = [None] * 20\n"
                      "_t = threading.Thread(target=_swap)\n_t.start()\n_t.join()")["execution_count"]
    ledger = names(kernel)
    assert ledger["threaded"]["rebound_cell"] == cell
    assert ledger["threaded"]["bytes"] == kernel.query(
        "__import__('sys').getsizeof(threaded) + sum(map(__import__('sys').getsizeof, threaded))")
    assert ledger["from_thread"]["created_cell"] == cell
    assert ledger["untouched"]["rebound_cell"] == made


def test_a_thread_that_binds_between_cells_counts_for_the_cell_that_sees_it(kernel):
    kernel.run("import threading\n_go, _done = threading.Event(), threading.Event()\n"
               "def _late():\n"
               "    _go.wait()\n"
               "    global late\n"
               "    late = [None] * 30\n"
               "    _done.set()\n"
               "threading.Thread(target=_late).start()")
    cell = kernel.run("_go.set()\n_done.wait(60)")["execution_count"]
    assert names(kernel)["late"]["created_cell"] == cell
    assert names(kernel)["late"]["bytes"] == size_of(kernel, "late")


def test_reset_then_bindings_through_globals(kernel):
    kernel.run("before_reset = [1] * 5")
    kernel.run("%reset -f")
    cell = kernel.run("globals().update(after_reset=[2] * 5)")["execution_count"]
    ledger = names(kernel)
    assert "before_reset" not in ledger
    assert ledger["after_reset"]["created_cell"] == cell


def test_change_tracking_follows_the_version_and_survives_a_reload(kernel):
    expected = kernel.query("'dict watcher' if __import__('sys').version_info >= (3, 12) "
                            "else 'namespace scan'")
    assert kernel.query("__import__('memtamer')._core.ledger()['change_tracking']") == expected
    for _ in range(10):  # CPython has 8 watcher slots: each unload gives its slot back
        kernel.run("%reload_ext memtamer")
    assert kernel.query("__import__('memtamer')._core.ledger()['change_tracking']") == expected
    cell = kernel.run("after_reloads = [3] * 9")["execution_count"]
    assert names(kernel)["after_reloads"]["created_cell"] == cell
