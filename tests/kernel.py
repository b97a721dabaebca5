"""A real ipykernel, driven over ZeroMQ by jupyter_client, for integration tests."""

import ast
import json
import os
import queue
import signal
import time

from jupyter_client.manager import KernelManager


class CellError(AssertionError):
    pass


class Kernel:
    """Starts a kernel of this Python; run() executes a cell and returns what
    it printed and raised; query() evaluates an expression without a cell."""

    def __init__(self, env=None, cwd=None, connection_file=None):
        self.km = KernelManager(kernel_name="python3")
        if connection_file:  # where Jupyter puts it: <runtime dir>/kernel-<id>.json
            self.km.connection_file = connection_file
        kernel_env = dict(os.environ)
        kernel_env.update(env or {})
        self.km.start_kernel(env=kernel_env, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code, timeout=300, allow_error=False, interrupt_after=None):
        """Executes code as a cell; returns {'stdout', 'stderr', 'error', 'data',
        'updates', 'execution_count'} (updates: (display_id, data) of each
        update_display_data, and of each display_data that has a display_id).  Raises CellError when the cell fails unless allow_error.
        interrupt_after: seconds after which the kernel is interrupted (SIGINT)."""
        msg_id = self.kc.execute(code)
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            self.km.interrupt_kernel()
        out = {"stdout": "", "stderr": "", "error": None, "data": [], "updates": [],
               "execution_count": None}
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no output from the kernel within {timeout}s for {code!r}")
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
            elif kind in ("display_data", "execute_result"):
                out["data"].append(content["data"])
            if kind in ("display_data", "update_display_data") and \
                    (content.get("transient") or {}).get("display_id"):
                out["updates"].append((content["transient"]["display_id"], content["data"]))
            elif kind == "error":
                out["error"] = {"ename": content["ename"], "evalue": content["evalue"],
                                "traceback": "\n".join(content["traceback"])}
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        out["execution_count"] = content.get("execution_count")
        # IPython reports a UsageError only in the reply, not on iopub.
        if content["status"] == "error" and out["error"] is None:
            out["error"] = {"ename": content.get("ename"), "evalue": content.get("evalue"),
                            "traceback": "\n".join(content.get("traceback") or [])}
        if out["error"] and not allow_error:
            raise CellError(f"cell failed: {out['error']['ename']}: {out['error']['evalue']}\n"
                            f"{out['error']['traceback']}")
        return out

    def query(self, expression, timeout=120):
        """The JSON value of expression, evaluated silently (no cell, no hooks)."""
        msg_id = self.kc.execute("", silent=True, store_history=False,
                                 user_expressions={"v": f"__import__('json').dumps({expression})"})
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        value = reply["content"]["user_expressions"]["v"]
        if value["status"] != "ok":
            raise CellError(f"{expression}: {value.get('ename')}: {value.get('evalue')}")
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    def last_cell(self):
        return self.query("__import__('memtamer').report()['cells'][-1]")

    def is_alive(self):
        return self.km.is_alive()

    def kill(self):
        """SIGKILL, as the OOM killer would."""
        self.km.signal_kernel(signal.SIGKILL)

    def shutdown(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
