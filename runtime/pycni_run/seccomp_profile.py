"""Seccomp profiles as data, and Docker's default in our own form (``seccomp_json`` reads
Docker's JSON format into the same form). Pure: libseccomp is only used by ``seccomp_filter``.

A profile is a default action plus rules. A rule names syscalls, an action, optional argument
conditions, and when it applies (Docker's ``includes``/``excludes``): only with every listed
capability / without any of them, on listed architectures (Go's names: ``amd64``, ``x86``,
...), from a minimum kernel. ``applicable`` picks the rules for one container (its bounding
set, this machine's architecture and kernel), as moby's ``setupSeccomp`` does.

``DOCKER_DEFAULT`` follows moby's ``profiles/seccomp/default.json`` (the 25.x list, read, not
copied): everything not allowed fails with EPERM, ``clone3`` with ENOSYS (glibc then falls back
to ``clone``, whose namespace flags are refused, user namespaces included), and the calls that
need a capability (mount, unshare, setns, settimeofday, reboot, ptrace, ...) are allowed only to
a container that has it. ``keyctl``, ``add_key`` and ``request_key`` are never allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ACTIONS",
    "ARCHES",
    "DOCKER_DEFAULT",
    "OPERATORS",
    "Condition",
    "Profile",
    "Rule",
    "Scope",
    "applicable",
]

EPERM: Final = 1
ENOSYS: Final = 38
# Docker's action names -> ours (SCMP_ACT_NOTIFY needs a listener: not supported).
ACTIONS: Final = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",
    "SCMP_ACT_KILL": "kill_thread",
    "SCMP_ACT_KILL_THREAD": "kill_thread",
    "SCMP_ACT_KILL_PROCESS": "kill_process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_TRACE": "trace",
    "SCMP_ACT_LOG": "log",
}
OPERATORS: Final = {
    "SCMP_CMP_NE": "ne",
    "SCMP_CMP_LT": "lt",
    "SCMP_CMP_LE": "le",
    "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge",
    "SCMP_CMP_GT": "gt",
    "SCMP_CMP_MASKED_EQ": "masked_eq",
}
# Docker's SCMP_ARCH_* -> libseccomp's architecture names.
ARCHES: Final = {
    f"SCMP_ARCH_{name.upper()}": name
    for name in (
        "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32", "mipsel",
        "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "riscv64",
    )
}


@dataclass(frozen=True, slots=True)
class Condition:
    """Argument ``index`` compared by ``op``; for ``masked_eq``, ``arg & value == value_two``."""

    index: int
    op: str
    value: int
    value_two: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Scope:
    """Docker's includes/excludes: capabilities, architectures (Go's names), minimum kernel."""

    caps: frozenset[str] = frozenset()
    arches: frozenset[str] = frozenset()
    min_kernel: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    names: tuple[str, ...]
    action: str = "allow"
    errno: int | None = None
    conditions: tuple[Condition, ...] = ()
    includes: Scope = field(default_factory=Scope)
    excludes: Scope = field(default_factory=Scope)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    default_action: str = "errno"
    default_errno: int = EPERM
    # libseccomp architecture names per native architecture: the filter covers the native one
    # and these (x86_64: x86 and x32 binaries too). Empty: the native one only.
    arch_map: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rules: tuple[Rule, ...] = ()


def applicable(
    profile: Profile, *, caps: frozenset[str], arch: str, kernel: tuple[int, int]
) -> tuple[Rule, ...]:
    """The rules for a container with bounding set ``caps`` on ``arch`` and ``kernel``."""

    def excluded(scope: Scope) -> bool:
        return bool(
            arch in scope.arches
            or scope.caps & caps
            or (scope.min_kernel is not None and kernel >= scope.min_kernel)
        )

    def included(scope: Scope) -> bool:
        return (
            (not scope.arches or arch in scope.arches)
            and scope.caps <= caps
            and (scope.min_kernel is None or kernel >= scope.min_kernel)
        )

    return tuple(r for r in profile.rules if not excluded(r.excludes) and included(r.includes))


# ---------------------------------------------------------------------- Docker's default


def _rule(names: str, **kwargs: Any) -> Rule:
    return Rule(names=tuple(names.split()), **kwargs)


def _needs(cap: str, names: str) -> Rule:
    return _rule(names, includes=Scope(caps=frozenset({cap})))


def _on(arches: str, names: str) -> Rule:
    return _rule(names, includes=Scope(arches=frozenset(arches.split())))


_ALWAYS: Final = """
accept accept4 access adjtimex alarm bind brk capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchown fchown32 fchownat fcntl
fcntl64 fdatasync fgetxattr flistxattr flock fork fremovexattr fsetxattr fstat fstat64
fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex futex_time64 futex_waitv
futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit
io_uring_enter io_uring_register io_uring_setup ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat listen
listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise membarrier
memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2
mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall
munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl
pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64
recvmsg remap_file_pages removexattr rename renameat renameat2 restart_syscall rmdir rseq
rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr
sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
sched_rr_get_interval sched_rr_get_interval_time64 sched_setaffinity sched_setattr
sched_setparam sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid
setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid
setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit
set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32 setxattr
shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn
socketcall socketpair splice stat stat64 statfs statfs64 statx symlink symlinkat sync
sync_file_range syncfs sysinfo tee tgkill time timer_create timer_delete timer_getoverrun
timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime
timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64 ugetrlimit
umask uname unlink unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid
waitpid write writev
"""
AF_VSOCK: Final = 40
# Every CLONE_NEW* flag: a clone without CAP_SYS_ADMIN may set none of them.
CLONE_NAMESPACE_FLAGS: Final = 0x7E020000
_NO_SYS_ADMIN: Final = frozenset({"CAP_SYS_ADMIN"})
_S390: Final = frozenset({"s390", "s390x"})
# personality(2) personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, a query.
_PERSONAS: Final = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

DOCKER_DEFAULT: Final = Profile(
    name="default",
    arch_map=(
        ("x86_64", ("x86", "x32")),
        ("aarch64", ("arm",)),
        ("s390x", ("s390",)),
        ("riscv64", ()),
    ),
    rules=(
        _rule(_ALWAYS),
        _rule("process_vm_readv process_vm_writev ptrace", includes=Scope(min_kernel=(4, 8))),
        _rule("socket", conditions=(Condition(0, "ne", AF_VSOCK),)),
        *(_rule("personality", conditions=(Condition(0, "eq", p),)) for p in _PERSONAS),
        _on("ppc64le", "sync_file_range2 swapcontext"),
        _on(
            "arm arm64",
            "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
        ),
        _on("amd64 x32", "arch_prctl"),
        _on("amd64 x32 x86", "modify_ldt"),
        _on("s390 s390x", "s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr"),
        _on("riscv64", "riscv_flush_icache"),
        _needs("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
        _needs(
            "CAP_SYS_ADMIN",
            "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount "
            "mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd "
            "setdomainname sethostname setns syslog umount umount2 unshare",
        ),
        _rule(
            "clone",
            conditions=(Condition(0, "masked_eq", CLONE_NAMESPACE_FLAGS, 0),),
            excludes=Scope(caps=_NO_SYS_ADMIN, arches=_S390),
        ),
        _rule(
            "clone",  # s390 passes the flags second
            conditions=(Condition(1, "masked_eq", CLONE_NAMESPACE_FLAGS, 0),),
            includes=Scope(arches=_S390),
            excludes=Scope(caps=_NO_SYS_ADMIN),
        ),
        _rule("clone3", action="errno", errno=ENOSYS, excludes=Scope(caps=_NO_SYS_ADMIN)),
        _needs("CAP_SYS_BOOT", "reboot"),
        _needs("CAP_SYS_CHROOT", "chroot"),
        _needs("CAP_SYS_MODULE", "delete_module init_module finit_module"),
        _needs("CAP_SYS_PACCT", "acct"),
        _needs(
            "CAP_SYS_PTRACE",
            "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
        ),
        _needs("CAP_SYS_RAWIO", "iopl ioperm"),
        _needs("CAP_SYS_TIME", "settimeofday stime clock_settime clock_settime64"),
        _needs("CAP_SYS_TTY_CONFIG", "vhangup"),
        _needs("CAP_SYS_NICE", "get_mempolicy mbind set_mempolicy set_mempolicy_home_node"),
        _needs("CAP_SYSLOG", "syslog"),
        _needs("CAP_BPF", "bpf"),
        _needs("CAP_PERFMON", "perf_event_open"),
    ),
)
