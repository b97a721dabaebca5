"""The ledger learns what a cell changed by comparing the namespace with its
snapshot in step: every way a binding can change still reaches it, with the
same provenance a full scan gave."""


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
