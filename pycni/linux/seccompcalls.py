"""Loading a seccomp filter (seccomp(2), which glibc 2.36 does not wrap)."""

from __future__ import annotations

import ctypes
from typing import Final

from pycni.linux._libc import check, libc

__all__ = ["load_seccomp_filter"]

_SYS_SECCOMP: Final = 317  # x86_64
_SECCOMP_SET_MODE_FILTER: Final = 1
_BPF_INSN_SIZE: Final = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_seccomp_filter(program: bytes) -> None:
    """Install a classic BPF seccomp filter (``struct sock_filter`` array) on the caller.

    Without no_new_privs the caller needs CAP_SYS_ADMIN, as with libseccomp's own load."""
    if not program or len(program) % _BPF_INSN_SIZE:
        raise ValueError(f"a BPF program is whole 8-byte instructions, not {len(program)} bytes")
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // _BPF_INSN_SIZE, ctypes.cast(buf, ctypes.c_void_p))
    ret = libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog))
    check(ret, "seccomp")
