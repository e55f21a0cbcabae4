"""The jobs' seccomp filter (issue 16): every denied system call fails, cold and warm;
ordinary programs still work. (Every language runtime and its compiler, JITs included, runs
under the filter in tests/test_runtimes.py, in an image that has them all.)

A job calls each denied syscall by number through ctypes (the numbers come from
libseccomp, for this machine's architecture) and reports the errno. The same job on a
server started with ``--seccomp false`` shows that the filter, not missing capabilities,
is what stops them.
"""
from __future__ import annotations

import errno
import json
import platform

import pyseccomp
import pytest
from conftest import OrqServer

from server.backends import seccomp


def numbers() -> dict[str, int]:
    """Denied syscalls that exist on this architecture (plus clone and clone3)."""
    names = seccomp.denied_names() + ["clone", "clone3"]
    found = {n: pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, n) for n in names}
    return {n: nr for n, nr in found.items() if nr >= 0}


CALLS = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(512)
text = ctypes.c_char_p
# arguments under which each call would do something real for an unprivileged process
SPECIAL = {"io_uring_setup": (1, buf), "userfaultfd": (1,), "keyctl": (0, -3, 1),
           "add_key": (text(b"user"), text(b"orq"), text(b"x"), 1, -2),
           "perf_event_open": (buf, 0, -1, -1, 0)}
out = {}
def call(key, nr, args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    if r == 0 and key.startswith("clone"):
        os._exit(0)  # a child: the filter let a namespace through; the parent reports it
    out[key] = ctypes.get_errno() if r == -1 else "ok"
for name, nr in NUMS.items():
    if name != "clone":
        call(name, nr, SPECIAL.get(name, (0, 0, 0, 0, 0)))
for flag, value in CLONE_NEW.items():
    call("clone " + flag, NUMS["clone"], (value | 17, 0, 0, 0, 0))  # 17: SIGCHLD
print(json.dumps(out))
"""


def errnos(srv: OrqServer) -> dict[str, object]:
    code = f"NUMS = {numbers()!r}\nCLONE_NEW = {seccomp.CLONE_NEW!r}\n" + CALLS
    job = srv.run(code, timeout=20)
    assert job["status"] == "DONE", job
    return json.loads(job["result"])


@pytest.fixture(scope="module", params=["warm", "cold"])
def filtered(request, tmp_path_factory):
    srv = OrqServer(tmp_path_factory.mktemp(f"seccomp-{request.param}") / "data",
                    ["--auth", "open", "--warm", str(request.param == "warm").lower()]).start()
    health = srv.request("GET", "/healthz").json
    assert (health["warm"], health["seccomp"]) == (request.param == "warm", True), srv.log()
    yield srv
    srv.kill()


def test_every_denied_syscall_fails(filtered):
    seen = errnos(filtered)
    expected = {n: errno.EPERM for n in numbers() if n != "clone"}
    expected.update({"clone3": errno.ENOSYS}, **{f"clone {f}": errno.EPERM
                                                  for f in seccomp.CLONE_NEW})
    assert seen == expected


@pytest.mark.parametrize("warm", ["true", "false"])
def test_without_the_filter_they_do_not_fail_alike(server_factory, warm):
    """The control: with --seccomp false the same calls succeed or fail otherwise."""
    srv = server_factory("--auth", "open", "--seccomp", "false", "--warm", warm)
    seen = errnos(srv)
    assert (seen["unshare"], seen["keyctl"], seen["add_key"]) == ("ok", "ok", "ok"), seen
    assert seen["clone3"] == errno.EINVAL, seen  # a real clone3 refusing a 0-byte argument
    assert "without a seccomp filter" in srv.log()
    assert srv.request("GET", "/healthz").json["seccomp"] is False


# 32-bit system calls from a 64-bit job (int 0x80: the i386 table, the classic way around
# a filter that covers only the native one); the job prints what each returns (-errno)
I386 = {"keyctl": 288, "add_key": 286, "ptrace": 26, "unshare": 310}
INT80 = """
import ctypes, mmap
code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
for name, nr in I386.items():  # eax=nr, ebx=0, ecx=-3 (the session keyring), edx=0
    code.seek(0)
    code.write(b"\\xb8" + nr.to_bytes(4, "little") + b"\\x31\\xdb\\xb9\\xfd\\xff\\xff\\xff"
               b"\\x31\\xd2\\xcd\\x80\\xc3")  # mov eax; xor ebx; mov ecx; xor edx; int 0x80; ret
    print(name, call())
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the i386 table is x86-64's")
def test_32_bit_system_calls_are_filtered_too(filtered, server_factory):
    code = f"I386 = {I386!r}\n" + INT80
    job = filtered.run(code)
    assert job["result"].split() == [w for n in I386 for w in (n, str(-errno.EPERM))], job
    control = server_factory("--auth", "open", "--seccomp", "false").run(code)
    seen = dict(line.split() for line in control["result"].splitlines())
    assert int(seen["keyctl"]) > 0 and seen["unshare"] == "0", control  # they reach the kernel


ORDINARY = """
import ctypes, mmap, multiprocessing, os, subprocess, threading
status = dict(l.split(":\\t", 1) for l in open("/proc/self/status").read().splitlines())
print("seccomp", status["Seccomp"], status["Seccomp_filters"] != "0")
box = []
threads = [threading.Thread(target=box.append, args=(i,)) for i in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("threads", sorted(box) == list(range(8)))
print("subprocess", subprocess.run(["bash", "-c", "echo $((6*7)) | cat"], capture_output=True,
                                   text=True).stdout.strip())
with multiprocessing.Pool(2) as pool:
    print("pool", sum(pool.map(abs, range(-5, 0))))
pid = os.posix_spawn("/bin/true", ["true"], {})
print("spawn", os.waitpid(pid, 0)[1])
# what a JIT does: write code into memory, then make it executable and call it
code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(bytes([0xb8, 42, 0, 0, 0, 0xc3]) if os.uname().machine == "x86_64" else b"")
if os.uname().machine == "x86_64":
    addr = ctypes.addressof(ctypes.c_char.from_buffer(code))
    print("jit", ctypes.CFUNCTYPE(ctypes.c_int)(addr)())
else:
    print("jit", 42)
print("proc", os.readlink("/proc/self/exe").startswith("/usr"), len(os.listdir("/proc/self/fd")) > 2)
"""


def test_ordinary_programs_still_work(filtered):
    job = filtered.run(ORDINARY, timeout=30)
    assert job["status"] == "DONE", job
    assert job["result"].splitlines() == [
        "seccomp 2 True", "threads True", "subprocess 42", "pool 15", "spawn 0", "jit 42",
        "proc True True"], job
