"""The seccomp filter of every local job: Docker's default deny-list, compiled by libseccomp.

The filter allows every system call but those below, which fail with EPERM (``clone3``
with ENOSYS, so that libc falls back to ``clone``, whose namespace flags a filter can
see; Docker does the same). They are kernel interfaces no job needs and where most
recent kernel escapes were found. Everything ordinary programs, the warm runners and
language runtimes use (threads, fork/exec, mmap/mprotect for JITs, ...) stays allowed.
The program is compiled once at start-up into classic BPF bytes by libseccomp, through
its Python binding ``pyseccomp``; it does not depend on the job's root file system:
bwrap reads it from an fd (``--seccomp``) and the warm runner gets it as bytes.
"""
from __future__ import annotations

import errno
import logging
import os
from collections.abc import Collection

log = logging.getLogger("orq.seccomp")

# name groups, as docs/SECURITY.md lists them; the reason is Docker's (moby
# profiles/seccomp/default.json), io_uring included as Docker denies it since 25.0
DENIED: dict[str, tuple[str, ...]] = {
    "kernel interfaces behind most recent escapes":
        ("io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd",
         "perf_event_open", "bpf"),
    "kernel keyrings (not namespaced)": ("keyctl", "add_key", "request_key"),
    "other processes' memory": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
                                "pidfd_getfd", "process_madvise"),
    "file handles (they bypass path permissions)": ("open_by_handle_at", "name_to_handle_at"),
    "mounts": ("mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
               "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr"),
    "new namespaces": ("unshare", "setns"),
    "the kernel and the machine": (
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "create_module", "get_kernel_syms", "query_module", "reboot", "swapon", "swapoff",
        "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl",
        "uselib", "ustat", "sysfs", "_sysctl", "vhangup", "fanotify_init", "ioperm",
        "iopl", "vm86", "vm86old"),
    "the clock (not namespaced)": ("settimeofday", "stime", "clock_settime",
                                   "clock_settime64", "clock_adjtime", "clock_adjtime64"),
    "NUMA memory policy": ("mbind", "get_mempolicy", "set_mempolicy",
                           "set_mempolicy_home_node", "migrate_pages", "move_pages"),
}
# clone() with any of these flags (new mount, cgroup, UTS, IPC, user, PID, network
# namespace) is denied too; clone3() passes its flags in memory a filter cannot read
CLONE_NEW = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
             "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000,
             "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
             "CLONE_NEWNET": 0x40000000}
# what a warm runner itself needs to prepare each job (its job's filter denies them)
RUNNER_NEEDS = ("mount", "unshare")


class SeccompUnavailable(RuntimeError):
    """libseccomp cannot be loaded or refuses the filter; the message says how to fix it."""


def denied_names() -> list[str]:
    return [name for names in DENIED.values() for name in names]


def build(allow: Collection[str] = ()) -> bytes:
    """The BPF program (``struct sock_filter`` array) of the filter, minus ``allow``."""
    try:
        import pyseccomp as sc  # loads libseccomp.so.2 through ctypes
    except (ImportError, RuntimeError, OSError) as exc:
        raise SeccompUnavailable(f"the job's seccomp filter needs libseccomp ({exc}): "
                                 "install it (Debian/Ubuntu: `apt-get install libseccomp2`, "
                                 "or run `scripts/deploy.sh local`)") from exc
    bpf = sc.SyscallFilter(sc.ALLOW)
    try:  # a binary tree: measured, the kernel then prepares (JIT, action cache) the
        bpf.set_attr(sc.Attr.CTL_OPTIMIZE, 2)  # 3-arch program in ~1/3 of the time
    except OSError:
        pass  # libseccomp < 2.5: a linear program, slower to load, same rules
    native = sc.system_arch()
    if native == sc.Arch.X86_64:  # 32-bit and x32 calls: the same rules, not a way around
        for arch in (sc.Arch.X86, sc.Arch.X32):
            bpf.add_arch(arch)
    skipped = []
    for name in denied_names():
        if name in allow:
            continue
        if sc.resolve_syscall(sc.Arch.NATIVE, name) == -1:  # unknown to this libseccomp
            skipped.append(name)
            continue
        bpf.add_rule(sc.ERRNO(errno.EPERM), name)
    flags_arg = 1 if native in (sc.Arch.S390, sc.Arch.S390X) else 0
    for flag in CLONE_NEW.values():
        bpf.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(flags_arg, sc.MASKED_EQ, flag, flag))
    bpf.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    if skipped:
        log.info("seccomp: this libseccomp does not know %s (not denied)", ", ".join(skipped))
    with os.fdopen(os.memfd_create("seccomp", os.MFD_CLOEXEC), "w+b") as program:
        try:
            bpf.export_bpf(program)
        except OSError as exc:
            raise SeccompUnavailable(f"libseccomp could not compile the filter: {exc}") \
                from exc
        program.seek(0)
        return program.read()
