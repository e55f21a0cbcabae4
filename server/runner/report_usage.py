"""Run a command and write its rusage to a file descriptor, then exit as it did.

The local backend's usage of a cold job on a host without cgroups: bwrap reports the
exit status of the job's init but is never the parent that reaps the job, so its own
rusage does not hold the job's. Standard library only; run inside the sandbox as
``python3 -I -S -c SOURCE FD COMMAND...``. It writes ``"<cpu_ms> <max_rss_kb>"`` (the
command and what it waited for, plus the orphans reaped here) when the command ends on
its own; a sandbox killed for a timeout or a cancel takes it down before it can.
"""
import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # the job cannot write its own figures
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # orphans come back here
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(sys.argv[2], sys.argv[2:])
        except OSError as exc:
            os.write(2, f"orq: cannot start the job: {exc}\n".encode())
            os._exit(127)
    cpu_s, peak, job_status = 0.0, 0, None
    while True:
        try:
            done, status, rusage = os.wait4(-1, 0 if job_status is None else os.WNOHANG)
        except ChildProcessError:
            break
        if done == 0:
            break  # the job ended; what it left running dies with the sandbox
        cpu_s += rusage.ru_utime + rusage.ru_stime
        peak = max(peak, rusage.ru_maxrss)
        if done == pid:
            job_status = status
    os.write(fd, f"{round(cpu_s * 1000)} {peak}".encode())
    if os.WIFSIGNALED(job_status):
        signal.signal(os.WTERMSIG(job_status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(job_status))
    sys.exit(os.WEXITSTATUS(job_status))


main()
