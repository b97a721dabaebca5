"""The kernel's descendants with their roles: what _core.children() reads
from /proc, and what only the libraries that started them know (a
multiprocessing pool's workers, a dask nanny's worker and its
memory_limit).  Reads those libraries' objects; never starts, joins or
reaps anything."""

import sys

SUMMARY_CHILDREN = 3

POOL_WORKER = "multiprocessing pool worker"
LOKY_WORKER = "loky worker"
DASK_WORKER = "dask worker"
PROCESS = "multiprocessing process"

# What replaces a worker that dies, and so loses what it held: the reason
# memtamer names such a worker instead of killing it.
SUPERVISORS = {
    POOL_WORKER: "its multiprocessing.Pool",
    LOKY_WORKER: "its loky executor",
}


def _library_workers():
    """{pid: (role, supervisor, memory_limit)} from the libraries' own
    objects: multiprocessing's list of this process's children and dask's
    nannies.  Only libraries already imported are looked at."""
    found = {}
    process = sys.modules.get("multiprocessing.process")
    for child in list(getattr(process, "_children", ()) if process else ()):
        pid = child.pid
        name = getattr(child, "name", "") or ""
        if pid is None:
            continue
        if "PoolWorker" in name:
            found[pid] = (POOL_WORKER, SUPERVISORS[POOL_WORKER], None)
        elif "Loky" in name:
            found[pid] = (LOKY_WORKER, SUPERVISORS[LOKY_WORKER], None)
        else:
            found[pid] = (PROCESS, None, None)
    nanny = sys.modules.get("distributed.nanny")
    for each in list(getattr(getattr(nanny, "Nanny", None), "_instances", ()) if nanny else ()):
        try:
            pid = each.pid
            limit = each.memory_manager.memory_limit
            address = each.address
        except Exception:  # a nanny starting or closing: no worker to name yet
            continue
        if pid is not None:
            found[pid] = (DASK_WORKER, f"dask nanny {address}", limit or None)
    return found


def _role_from_command(command):
    if "loky" in command:
        return LOKY_WORKER
    if "multiprocessing.resource_tracker" in command:
        return "multiprocessing resource tracker"
    if "multiprocessing.forkserver" in command:
        return "multiprocessing fork server"
    if "--multiprocessing-fork" in command:
        return PROCESS
    return None


def describe(children):
    """children (_core.children()'s list) with role, supervisor and
    memory_limit added to each, and depth (0 for the kernel's own children)
    for a tree; in place, returned."""
    workers = _library_workers()
    depth = {}
    for child in children:
        depth[child["pid"]] = depth.get(child["ppid"], -1) + 1
        child["depth"] = depth[child["pid"]]
        role, supervisor, limit = workers.get(child["pid"], (None, None, None))
        role = role if role not in (None, PROCESS) else _role_from_command(child["command"]) or role
        if child["ports"] and role in (None, PROCESS):
            # A worker listens too (a dask worker on its address): its role
            # says more; the ports stay in its "ports".
            ports = ", ".join(str(p) for p in child["ports"])
            role = f"server listening on port{'s' if len(child['ports']) > 1 else ''} {ports}"
        child["role"] = role
        child["supervisor"] = supervisor or (SUPERVISORS.get(role) if role else None)
        child["memory_limit"] = limit
    return children


def role_of(pid):
    """(role, supervisor, memory_limit) of one descendant, from the libraries'
    objects and its command line; Nones where nothing says."""
    from . import _core

    for child in describe([c for c in _core.children() if c["pid"] == pid]):
        return child["role"], child["supervisor"], child["memory_limit"]
    return None, None, None


def tree(children):
    """The list in tree order: each child after its parent, siblings by pid."""
    by_parent = {}
    pids = {c["pid"] for c in children}
    for child in children:
        parent = child["ppid"] if child["ppid"] in pids else None
        by_parent.setdefault(parent, []).append(child)
    ordered = []

    def visit(parent):
        for child in sorted(by_parent.get(parent, ()), key=lambda c: c["pid"]):
            ordered.append(child)
            visit(child["pid"])

    visit(None)
    return ordered


def current():
    """The descendants now, described, in tree order."""
    from . import _core

    return tree(describe(_core.children()))


def biggest(children, n=SUMMARY_CHILDREN):
    """The n that own most private memory."""
    return sorted(children, key=lambda c: c["private"] or 0, reverse=True)[:n]
