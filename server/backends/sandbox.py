"""The bubblewrap command line that isolates one job (or one warm runner)."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..runner.core import job_env

NOBODY = 65534
FIX_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`, or run "
            "`scripts/deploy.sh local`), or use --backend lambda")
# /etc entries an interpreter needs; nothing with secrets (no shadow, no ssh, no ssl keys)
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime",
             "nsswitch.conf", "mime.types")
PASSWD = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/tmp:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Sandbox:
    """Knows which host paths to show a job and how to call bwrap."""
    bwrap: str
    extra_ro: tuple[str, ...]  # interpreter prefixes outside /usr
    tmp_size_mb: int

    def argv(self, fds: dict[str, int], env: dict[str, str] | None = None,
             caps: tuple[str, ...] = (), root: str | None = None,
             binds: tuple[tuple[str, str, bool], ...] = ()) -> list[str]:
        """bwrap options up to (not including) the command.

        ``fds`` may hold ``/job/<name>`` entries (files copied into /job), ``info`` and
        ``block`` (used to place the process into its cgroup before it runs),
        ``passwd``/``group`` (small files for /etc) and ``seccomp`` (a BPF program bwrap
        loads right before it starts the command). ``caps`` are capabilities kept inside
        the sandbox (a warm runner's; never a job's). ``root`` is an image's root file
        system to show instead of the host's system directories. ``binds`` are extra
        (source, destination, writable) directories, such as a compile's /build.
        """
        size = str(self.tmp_size_mb * 1024 * 1024)
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--hostname", "orq", "--clearenv"]
        for key, value in (env or job_env()).items():
            args += ["--setenv", key, value]
        if root is None:
            args += _system_binds() + [a for p in self.extra_ro for a in ("--ro-bind", p, p)]
        else:
            args += image_binds(root)
        args += ["--proc", "/proc", "--dev", "/dev",
                 "--size", size, "--tmpfs", "/tmp",
                 "--size", size, "--tmpfs", "/dev/shm",
                 "--dir", "/job", "--chdir", "/tmp"]
        for name, dest in (("passwd", "/etc/passwd"), ("group", "/etc/group")):
            if name in fds:
                args += ["--ro-bind-data", str(fds[name]), dest]
        made = {"/job"}
        for name, dest in fds.items():
            if name.startswith("/job/"):
                for parent in reversed(Path(name).parents):  # a program's subdirectories
                    if str(parent) not in made and str(parent) != "/":
                        made.add(str(parent))
                        args += ["--dir", str(parent)]
                args += ["--ro-bind-data", str(dest), name]
        for source, dest, writable in binds:
            args += ["--bind" if writable else "--ro-bind", source, dest]
        # the root is bwrap's own tmpfs: without this a job could write /etc, /job or /
        # (uncapped, unlike /tmp); the /tmp and /dev/shm mounts stay writable
        args += ["--remount-ro", "/"]
        if "info" in fds:
            args += ["--info-fd", str(fds["info"])]
        if "block" in fds:
            args += ["--block-fd", str(fds["block"])]
        if "seccomp" in fds:
            args += ["--seccomp", str(fds["seccomp"])]
        args += [a for cap in caps for a in ("--cap-add", cap)]
        return args + ["--"]


def _system_binds() -> list[str]:
    args: list[str] = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/" + name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), "/" + name]
        elif path.is_dir():
            args += ["--ro-bind", str(path), "/" + name]
    for name in ETC_FILES:
        path = Path("/etc") / name
        if path.exists():
            args += ["--ro-bind", str(path), str(path)]
    return args


# an image's top-level entries the sandbox provides itself (or that must stay hidden)
IMAGE_SKIP = frozenset(("proc", "sys", "dev", "tmp", "job"))


@functools.lru_cache(maxsize=256)
def _image_binds(root: str) -> tuple[str, ...]:
    args: list[str] = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in IMAGE_SKIP:
                continue
            dest = "/" + entry.name
            if entry.is_symlink():
                args += ["--symlink", os.readlink(entry.path), dest]
            else:
                args += ["--ro-bind", entry.path, dest]
    return tuple(args)


def image_binds(root: str) -> list[str]:
    """An image's whole tree, read-only: each top-level entry bound (or its symlink made)
    on bwrap's own root, so that /tmp, /job, /proc and /dev stay the sandbox's. Cached:
    a stored image never changes."""
    return list(_image_binds(root))


def image_env(config_env: dict[str, str]) -> dict[str, str]:
    """What a job in an image sees: the image's own variables (PATH, JAVA_HOME, ...) over a
    plain default, with orq's HOME and TMPDIR (the private /tmp)."""
    env = {**job_env(), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    env.update(config_env)
    env.update(HOME="/tmp", TMPDIR="/tmp")
    return env


def interpreter_prefixes(*interpreters: str) -> tuple[str, ...]:
    """Install prefixes of interpreters that live outside /usr (e.g. a pyenv build)."""
    prefixes = []
    for exe in interpreters:
        real = Path(shutil.which(exe) or exe).resolve()
        if not str(real).startswith("/usr/") and real.parent.name == "bin":
            prefixes.append(str(real.parent.parent))
    return tuple(dict.fromkeys(prefixes))


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise SandboxUnavailable(f"the local backend needs bubblewrap (bwrap), which is not "
                                 f"installed: {FIX_HINT}")
    return path


# the environment bwrap itself runs with: bwrap's pid 1 inside the sandbox keeps it, and a
# job can read /proc/1/environ (same uid), so the server's variables must never reach it
LAUNCH_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv", path="/usr/bin:/bin")


def as_nobody() -> dict:
    """subprocess arguments that start a command as nobody the plain way, switching user in
    the forked child, with none of the server's environment."""
    env = {"env": dict(LAUNCH_ENV)}
    if os.geteuid() != 0:
        return env
    return {"user": NOBODY, "group": NOBODY, "extra_groups": [], **env}


def unprivileged(argv: list[str]) -> tuple[list[str], dict]:
    """``argv`` and the subprocess arguments that start it as nobody, with none of the
    server's environment. A root server switches user with setpriv(1) (util-linux) in front
    of the command instead of in the forked child: Python can then start it with vfork,
    while a child that must change its uid is a full fork, which copies the server's page
    tables with the event loop waiting (measured: 3.8 ms against 0.6 ms in a 100 MB process,
    and 4.3 against 2.7 ms to the command's end)."""
    if os.geteuid() != 0 or _setpriv() is None:
        return argv, as_nobody()
    return [_setpriv(), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
            *argv], {"env": dict(LAUNCH_ENV)}


def self_test(sandbox: Sandbox, python: str, fds: dict[str, int] | None = None) -> None:
    """Start one sandbox for real (with ``fds`` as in ``Sandbox.argv``); raise
    SandboxUnavailable with the reason if it fails."""
    fds = fds or {}
    argv, launch = unprivileged(
        sandbox.argv(fds) + [python, "-c", "import socket,sys; sys.stdout.write('ok')"])
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, timeout=30,
                              pass_fds=list(fds.values()), **launch)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"bubblewrap could not start a sandbox ({exc}): {FIX_HINT}")
    if proc.returncode != 0 or proc.stdout != b"ok":
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        hint = ("; unprivileged user namespaces may be disabled "
                "(sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces>0)")
        raise SandboxUnavailable(f"bubblewrap failed a test run: {reason[-1] if reason else proc.returncode}"
                                 f"{hint}")


def memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data`` (bwrap copies it in with --ro-bind-data)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
