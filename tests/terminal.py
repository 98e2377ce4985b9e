"""Run `facevid` as a person does: in a pseudo-terminal, so the progress bar really draws."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def environment(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1",
               TERM="xterm-256color", COLUMNS="120", LINES="40")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NO_COLOR"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_in_terminal(*args, timeout: float = 300, signal_after: tuple[str, int] | None = None,
                    cwd=None) -> tuple[int, str]:
    """Run `python -m facevid ARGS` with a pty as stdin, stdout and stderr: (exit code, what it
    showed, escape codes removed). `signal_after=(text, SIG)` sends SIG once `text` was shown."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "facevid", *map(str, args)], stdin=slave, stdout=slave,
                            stderr=slave, env=environment(), cwd=cwd, close_fds=True, start_new_session=True)
    os.close(slave)
    shown, deadline, sent = b"", time.monotonic() + timeout, False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:   # the child closed the terminal
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
            if signal_after and not sent and signal_after[0].encode() in shown:
                proc.send_signal(signal_after[1])
                sent = True
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"facevid {' '.join(map(str, args))} ran past {timeout} s:\n{shown[-2000:]!r}")
    finally:
        os.close(master)
    code = proc.wait(timeout=30)
    return code, ANSI.sub("", shown.decode(errors="replace")).replace("\r", "\n")


def kill_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session (and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
