"""The warm runner: a pre-started interpreter inside the sandbox that forks one fresh child per job.

Standard library only. The server starts it in a bubblewrap sandbox (same binds as a cold
job, plus CAP_SYS_ADMIN/CAP_SETPCAP *inside* the sandbox's user namespace)
as ``python3 -u /job/warm.py FD TMP_BYTES [SECCOMP]``, FD being a Unix socket to the
server and SECCOMP a file holding the jobs' seccomp filter (a BPF program).
Ahead of each job (while the slot is idle) it prepares the job's processes:

    runner --fork--> C: unshare(mount, PID, IPC namespaces); the network namespace is the
                            slot's own, empty one (bwrap's): no job process outlives its job
                            and jobs hold no capability to reconfigure it, so nothing passes
                            from one job to the next there, and a netns per job cost ~15%
             C --fork--> G: PID 1 of the new PID namespace; fresh /proc, /tmp, /dev/shm;
                            announced to the server, which moves G into the next job's
                            cgroup and only then sends the job; G enters a new cgroup
                            namespace and writes the source to a read-only /job
             G --fork--> H: rlimits, every capability dropped, no_new_privs, the seccomp
                            filter, then the job's code in the already initialised
                            interpreter

The runner never runs user code, so no job sees another's state. When H exits, G kills
the rest of the namespace, reports H's status and exits; the kernel tears the namespaces
down after the report, off the job's critical path.

Protocol: newline-terminated JSON both ways. Runner -> server ``{"ready": pid}`` once,
then ``{"prepared": C}`` (C's pid in the sandbox's PID namespace) whenever a job child is
ready; server -> runner a job ``{"rlimits": {...}}`` with four fds (stdin, stdout, stderr,
source memfd) attached; runner -> server ``{"exit": code, "usage": {"cpu_ms", "max_rss_kb"}}``
(the exit status, or 128 + signal; the rusage of H and of the orphans G reaped, absent
when G was killed before it reported), followed by the next ``{"prepared": ...}``.
"""
from __future__ import annotations

import builtins
import ctypes
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import traceback
import types

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x8000000, 0x20000000
CLONE_NEWCGROUP = 0x2000000  # after joining the job cgroup: the job sees it as its root
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus")  # as bwrap's --proc leaves them
RLIMITS = {"core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU,
           "nofile": resource.RLIMIT_NOFILE, "fsize": resource.RLIMIT_FSIZE,
           "as": resource.RLIMIT_AS, "nproc": resource.RLIMIT_NPROC}
SOURCE = "/job/main.py"
SECCOMP = b""  # the jobs' seccomp filter, read at start (main)

libc = ctypes.CDLL(None, use_errno=True)
with open("/proc/sys/kernel/cap_last_cap") as _f:
    LAST_CAP = int(_f.read())


def check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    check(libc.mount(enc(src), target.encode(), enc(fstype), ctypes.c_ulong(flags),
                     enc(data or None)), f"mount {target}")


def status_code(status: int) -> int:
    """A wait status as one number: the exit code, or 128 + the signal (as a shell reports)."""
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    return 128 + sig if sig else os.WEXITSTATUS(status)


# -- talking to the server ----------------------------------------------------------------

class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def send(self, msg: dict) -> None:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def recv(self) -> tuple[dict | None, list[int]]:
        fds: list[int] = []
        while b"\n" not in self.buf:
            data, new, _, _ = socket.recv_fds(self.sock, 65536, 8)
            fds += new
            if not data:
                return None, fds
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line), fds


class Prepared:
    """A job child made in advance (namespaces entered, mounts done) waiting for its job."""

    def __init__(self, chan: Channel, tmp_size: int) -> None:
        for _ in range(3):
            self._fork(chan, tmp_size)
            if self.ctl.recv(1) == b"p":  # G is ready
                chan.send({"prepared": self.pid})
                return
            self.discard()
        raise SystemExit("warm runner: cannot prepare a job child")

    def _fork(self, chan: Channel, tmp_size: int) -> None:
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.status_r, status_w = os.pipe()  # G reports the status before namespace teardown
        self.pid = os.fork()
        if self.pid == 0:
            try:
                chan.sock.close()
                self.ctl.close()
                os.close(self.status_r)
                job_child(theirs, status_w, tmp_size)
            except BaseException:  # noqa: BLE001 - report it on the server's log, never return
                traceback.print_exc()
            finally:
                os._exit(125)
        theirs.close()
        os.close(status_w)

    def discard(self) -> None:
        self.ctl.close()
        os.close(self.status_r)
        os.waitpid(self.pid, 0)


def serve(chan: Channel, tmp_size: int) -> None:
    """Announce a prepared child; the server puts its init into the job's cgroup, then sends
    the job; run it; report its status; prepare the next one."""
    while True:
        job = Prepared(chan, tmp_size)
        msg, fds = chan.recv()
        if msg is None:
            return
        if len(fds) != 4:
            raise SystemExit(f"warm runner: a job needs 4 fds, got {len(fds)}")
        try:
            socket.send_fds(job.ctl, [json.dumps(msg).encode() + b"\n"], fds)
        except OSError:
            pass  # G died while idle: its status (below) says so
        for fd in fds:
            os.close(fd)
        job.ctl.close()
        early = os.read(job.status_r, 64)  # empty when G died without reporting (killed)
        os.close(job.status_r)
        if early:
            code, cpu_ms, max_rss_kb = (int(n) for n in early.split())
            chan.send({"exit": code, "usage": {"cpu_ms": cpu_ms, "max_rss_kb": max_rss_kb}})
        _, status = os.waitpid(job.pid, 0)
        if not early:
            chan.send({"exit": status_code(status)})


# -- C: the job's child, outside its namespaces ----------------------------------------------

def job_child(ctl: socket.socket, status_w: int, tmp_size: int) -> None:
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        job_init(ctl, alive_r, status_w, tmp_size)
    os.close(alive_r)
    os.close(status_w)
    ctl.close()
    _, status = os.waitpid(pid, 0)
    os._exit(status_code(status))


# -- G: PID 1 of the job's namespace ------------------------------------------------------

def job_init(ctl: socket.socket, alive_r: int, status_w: int, tmp_size: int) -> None:
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(137)  # C died before pdeathsig was armed: do not outlive it
    setup_mounts(tmp_size)
    ctl.send(b"p")
    msg, source = receive_job(Channel(ctl))
    try:
        write_source(source)
        # the server moved this process into the job's cgroup before sending the job:
        # make that cgroup the root of what the job sees
        check(libc.unshare(CLONE_NEWCGROUP), "unshare cgroup")
    except OSError as exc:
        os.write(2, f"orq: cannot set up the job's sandbox: {exc}\n".encode())
        os._exit(125)
    pid = os.fork()
    if pid == 0:
        os.close(alive_r)
        run_job(msg, source)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    cpu_s, max_rss_kb = 0.0, 0  # of the job and the orphans reaped here: its rusage
    while True:  # reap orphans until the job itself ends
        done, status, rusage = os.wait4(-1, 0)
        cpu_s += rusage.ru_utime + rusage.ru_stime
        max_rss_kb = max(max_rss_kb, rusage.ru_maxrss)
        if done == pid:
            try:
                os.kill(-1, signal.SIGKILL)  # everything else in the namespace
            except ProcessLookupError:
                pass
            report = f"{status_code(status)} {round(cpu_s * 1000)} {max_rss_kb}"
            os.write(status_w, report.encode())
            os._exit(status_code(status))


def receive_job(chan: Channel) -> tuple[dict, bytes]:
    """Wait for the job: its settings, and stdin/stdout/stderr/source as fds."""
    msg, fds = chan.recv()
    if msg is None or len(fds) != 4:
        os._exit(0)  # discarded by the runner
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    source = os.pread(fds[3], 1 << 20, 0)
    for fd in fds:
        os.close(fd)
    return msg, source


def write_source(source: bytes) -> None:
    mount("tmpfs", "/job", "tmpfs", MS_NOSUID | MS_NODEV, f"size={len(source) + 65536},mode=755")
    with open(SOURCE, "wb") as f:
        f.write(source)
    mount(None, "/job", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def setup_mounts(tmp_size: int) -> None:
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name in PROC_READONLY:
        path = "/proc/" + name
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in ("/tmp", "/dev/shm"):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmp_size},mode=1777")


# -- H: the job itself ----------------------------------------------------------------------

def drop_privileges(rlimits: dict) -> None:
    for name, value in rlimits.items():
        resource.setrlimit(RLIMITS[name], (value, value))
    for cap in range(LAST_CAP + 1):
        check(libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop bounding capability")
    check(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient")
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    check(libc.capset(header, bytes(24)), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp(program: bytes) -> None:
    """Load a BPF program (8-byte ``struct sock_filter`` entries) for this thread and all
    it starts; the server compiled it with libseccomp. Needs no_new_privs first."""
    buf = ctypes.create_string_buffer(program, len(program))
    prog = SockFprog(len(program) // 8, ctypes.addressof(buf))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def run_job(msg: dict, source: bytes) -> None:
    try:
        os.closerange(3, 1 << 16)
        drop_privileges(msg["rlimits"])
        if SECCOMP:  # last: it denies mount and unshare, which the steps above needed
            install_seccomp(SECCOMP)
        os.chdir("/tmp")
    except OSError as exc:
        os.write(2, f"orq: cannot start the job: {exc}\n".encode())
        os._exit(125)
    os._exit(finish(execute(source)))


def execute(source: bytes) -> int:
    """Run the source as ``python3 -u /job/main.py`` would; return its exit status."""
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__, main.__cached__ = SOURCE, builtins, None
    sys.modules["__main__"] = main
    sys.argv = [SOURCE]
    sys.path[0] = "/job"
    try:
        exec(compile(source, SOURCE, "exec"), main.__dict__)  # noqa: S102 - this is the job
    except SystemExit as exc:
        return exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - the job's uncaught exception, as python3 prints it
        kind, value, tb = sys.exc_info()
        value.__traceback__ = tb.tb_next  # the job's frames only, as python3 shows them
        sys.excepthook(kind, value, value.__traceback__)
        return 1
    return 0


def exit_status(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def finish(code: int) -> int:
    """What the interpreter does at exit: join threads, run atexit, flush."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = exit_status(exc.code)
    except BaseException:  # noqa: BLE001 - an atexit handler failed
        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - python3 exits 120 when the final flush fails
            code = 120
    return code


def main() -> None:
    global SECCOMP
    chan, tmp_size = Channel(socket.socket(fileno=int(sys.argv[1]))), int(sys.argv[2])
    if len(sys.argv) > 3:
        with open(sys.argv[3], "rb") as f:
            SECCOMP = f.read()
    sys.argv = [SOURCE]
    chan.send({"ready": os.getpid()})
    serve(chan, tmp_size)


if __name__ == "__main__":
    main()
