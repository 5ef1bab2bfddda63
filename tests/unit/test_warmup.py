"""A spare's warm-up (``pycni.warmfork.warmup``), on the real kernel, without root: a worker
forked from a "server" teaches the shared map the pages it wrote, and the next spare copies
exactly those (writing them then takes no copy-on-write fault) and leaves the rest shared.

Each case runs in a fresh interpreter: forking pytest itself would copy its whole heap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

_PRELUDE = """
import ctypes, json, os, resource, sys
from pycni.warmfork.warmup import PAGE, HotPages, learn_after_call

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def index_of(hot, address):
    first = 0
    for start, end in hot.ranges:
        if start <= address < end:
            return first + (address - start) // PAGE
        first += (end - start) // PAGE
    raise LookupError(hex(address))

def in_child(body):
    "Run body() in a forked child; what it returns, through a pipe."
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(body()).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return json.loads(out) if out else None

# The "server's warm heap": 2048 pages of its own mapping, every page present.
heap = bytearray(2048 * PAGE)
for page in range(2048):
    heap[page * PAGE] = 1
base = ctypes.addressof((ctypes.c_char * len(heap)).from_buffer(heap))
first_page = -(-base // PAGE)  # the first whole page of the buffer
pages = lambda picks: [first_page * PAGE - base + p * PAGE for p in picks]
WRITTEN = pages(range(0, 1024, 8))  # what "calls" write: 128 pages
OTHERS = pages(range(1, 1024, 8))  # 128 pages nobody writes after the map is taken
"""


def _run(body: str) -> Any:
    script = _PRELUDE + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_spare_copies_exactly_the_pages_a_worker_wrote() -> None:
    result = _run("""
        hot = HotPages.of_this_heap()
        assert hot.marked() == 0

        def worker():
            for offset in WRITTEN:
                heap[offset] = 2
            hot.learn()

        in_child(worker)
        marked = [hot.marks[index_of(hot, base + o)] for o in WRITTEN + OTHERS]

        def spare():
            hot.populate()
            before = faults()
            for offset in WRITTEN:
                heap[offset] = 3
            written = faults() - before
            for offset in OTHERS:
                heap[offset] = 3
            return [written, faults() - before - written]

        print(json.dumps({"marked": marked, "faults": in_child(spare)}))
    """)
    marked = result["marked"]
    assert marked[:128] == [1] * 128  # every page the worker wrote
    assert sum(marked[128:]) == 0  # and none it did not
    written, others = result["faults"]
    assert written <= 8  # copied ahead: the interpreter's own odd page at most
    assert others >= 128  # shared still: each first write a copy-on-write fault


def test_a_worker_teaches_the_map_only_if_it_came_from_a_spare() -> None:
    """``learn_after_call`` learns in a process whose warm-up ran (a spare's worker), and does
    nothing in a worker forked for the call at hand (under a burst)."""
    result = _run("""
        hot = HotPages.of_this_heap()

        def forked_for_the_call():
            for offset in WRITTEN:
                heap[offset] = 2
            learn_after_call()

        in_child(forked_for_the_call)
        untaught = hot.marked()

        def from_a_spare():
            hot.warm(lambda: False)
            for offset in WRITTEN:
                heap[offset] = 2
            learn_after_call()

        in_child(from_a_spare)
        print(json.dumps([untaught, hot.marks[index_of(hot, base + WRITTEN[0])]]))
    """)
    assert result == [0, 1]


def test_the_warm_up_stops_when_a_call_arrives() -> None:
    """``populate`` asks before each run of pages whether to stop, and stops at once."""
    result = _run("""
        hot = HotPages.of_this_heap()
        hot.marks[:] = bytes([1, 0]) * (len(hot.marks) // 2) + bytes(len(hot.marks) % 2)
        asked = []

        def interrupted():
            asked.append(1)
            return len(asked) >= 3

        hot.populate(interrupted)
        print(json.dumps(len(asked)))
    """)
    assert result == 3


def test_pages_mapped_otherwise_since_the_map_was_taken_are_left_alone(tmp_path: Path) -> None:
    """Where the map had private memory and a shared file is mapped now, nothing is faulted
    in: a write fault there would dirty the file's pages."""
    result = _run(f"""
        import mmap
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        size = 64 * PAGE
        scratch = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        start = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
        hot = HotPages.of_this_heap()
        hot.marks[:] = b"\\x01" * len(hot.marks)
        index_of(hot, start)  # in the map
        scratch.close()
        fd = os.open({str(tmp_path / "file")!r}, os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, size)
        MAP_FIXED_NOREPLACE = 0x100000
        got = libc.mmap(start, size, mmap.PROT_READ | mmap.PROT_WRITE,
                        mmap.MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0)
        assert got == start, (hex(start), got, ctypes.get_errno())
        hot.populate()
        with open("/proc/self/smaps") as smaps:
            text = smaps.read()
        block = text[text.index(f"{{start:x}}-"):]
        rss = int(block.split("Rss:")[1].split()[0])
        print(json.dumps(rss))
    """)
    assert result == 0  # kB resident of the file's mapping: untouched
