"""A worker goes back to its baseline after a call (``pycni.warmfork.reuse``), or says why it
cannot. Each case runs in a child forked for it: the test process itself never changes its
namespaces, cwd, environment or signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from pycni.linux import nscalls
from pycni.warmfork.reuse import Baseline


def _in_child(case: Callable[[], Any]) -> Any:
    """``case()``'s value (JSON) from a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - reports through the pipe
        try:
            os.close(read_end)
            out = json.dumps({"value": case()})
        except BaseException:
            out = json.dumps({"error": traceback.format_exc()})
        os.write(write_end, out.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    doc = json.loads(data)
    assert "error" not in doc, doc["error"]
    return doc["value"]


def _state() -> dict[str, Any]:
    return {
        "net": os.readlink("/proc/thread-self/ns/net"),
        "mnt": os.readlink("/proc/thread-self/ns/mnt"),
        "cwd": os.getcwd(),
        "env": sorted(os.environ),
        "umask": _umask(),
        "usr1": str(signal.getsignal(signal.SIGUSR1)),
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, ())),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_restore_puts_back_namespaces_cwd_environment_umask_and_signals(
    container_ns: str,
) -> None:
    def case() -> Any:
        before = _state()
        baseline = Baseline.capture()
        fd = os.open(container_ns, os.O_RDONLY | os.O_CLOEXEC)
        nscalls.setns(fd, nscalls.CLONE_NEWNET)
        os.close(fd)
        nscalls.unshare(nscalls.CLONE_NEWNS)  # a mount namespace of the call's own
        os.chdir("/tmp")
        os.environ["PYCNI_TEST_LEFT"] = "1"
        os.umask(0o077)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        during = _state()
        return before, during, baseline.restore(), _state()

    before, during, why, after = _in_child(case)
    assert all(during[key] != before[key] for key in before), (before, during)
    assert why is None
    assert after == before


def _left(leave: Callable[[], object], **restore: float) -> str | None:
    def case() -> Any:
        baseline = Baseline.capture()
        leave()
        return baseline.restore(**restore)

    why = _in_child(case)
    assert why is None or isinstance(why, str)
    return why


def test_a_descriptor_left_open_is_refused() -> None:
    why = _left(lambda: os.open(os.devnull, os.O_RDONLY))
    assert why is not None
    assert why.startswith("the call left descriptors open: ")


def test_descriptors_the_call_brought_and_closed_are_not_counted() -> None:
    def case() -> Any:
        brought = os.open(os.devnull, os.O_RDONLY)
        baseline = Baseline.capture(not_ours=(brought,))
        os.close(brought)
        return baseline.restore()

    assert _in_child(case) is None


def test_a_thread_that_ends_soon_is_waited_for() -> None:
    assert _left(lambda: threading.Thread(target=time.sleep, args=(0.05,)).start()) is None


def test_a_thread_that_outlives_the_wait_is_refused() -> None:
    why = _left(lambda: threading.Thread(target=time.sleep, args=(5,), daemon=True).start(),
                threads_within=0.1)
    assert why == "the call left a thread running"


def test_a_process_the_call_ran_is_refused_even_once_waited_for() -> None:
    why = _left(lambda: subprocess.run(["true"], check=True))
    assert why == "the call ran another process"


def test_a_process_still_running_is_refused() -> None:
    def case() -> Any:
        baseline = Baseline.capture()
        child = subprocess.Popen(["sleep", "30"])
        try:
            return baseline.restore()
        finally:
            child.kill()
            child.wait()

    assert _in_child(case) == "the call ran another process"


def test_changed_credentials_are_refused() -> None:
    why = _left(lambda: os.setgroups([*os.getgroups(), 54321]))
    assert why == "the call changed the worker's credentials"
