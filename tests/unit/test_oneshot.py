"""A one-shot process's end (``pycni.oneshot.finish``): what an exit shows the caller, without
the interpreter's teardown; and its collector switch (``prepare(one_call=True)``).

Each case runs in a fresh interpreter: the exit is the thing under test.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import REPO

# Output left in stdout's buffer, an atexit handler, a non-daemon thread still running, and a
# module global whose finaliser only the interpreter's teardown would run.
_ENDING = f"""
import atexit, sys, threading, time
sys.path[:0] = [{str(REPO)!r}]
from pycni import oneshot

class Teardown:
    def __del__(self):
        print("teardown", flush=True)

kept = Teardown()
atexit.register(lambda: print("atexit"))

def late():
    time.sleep(0.2)
    print("thread")

threading.Thread(target=late).start()
sys.stdout.write("result")  # no newline, no flush: still in the buffer
sys.stderr.write("note")
oneshot.finish(int(sys.argv[1]))
"""


def _end(status: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-IS", "-c", _ENDING, str(status)],
                          capture_output=True, text=True, timeout=30, check=False)


def test_finish_exits_with_the_status_after_threads_atexit_and_flushing() -> None:
    for status in (0, 1, 7):
        ran = _end(status)
        assert ran.returncode == status
        assert ran.stdout == "result" + "thread\n" + "atexit\n"  # the interpreter's order
        assert ran.stderr == "note"


def test_finish_skips_the_interpreter_teardown() -> None:
    """The finaliser a teardown would run never runs: that teardown is what ``finish`` saves."""
    ran = _end(0)
    assert "teardown" not in ran.stdout


def test_an_unflushable_result_is_a_failed_exit() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whoever should read the result is gone: the flush gets EPIPE
    try:
        ran = subprocess.run([sys.executable, "-IS", "-c", _ENDING, "0"], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=30, check=False)
    finally:
        os.close(write_end)
    assert ran.returncode == 120


def _collector_after(code: str) -> str:
    probe = (f"import gc, sys\nsys.path[:0] = [{str(REPO)!r}]\nfrom pycni import oneshot\n"
             f"{code}\nprint(gc.isenabled())")
    return subprocess.run([sys.executable, "-IS", "-c", probe], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()


def test_only_a_one_call_process_goes_without_the_collector() -> None:
    assert _collector_after("oneshot.prepare(one_call=True)") == "False"
    assert _collector_after("oneshot.prepare()") == "True"
