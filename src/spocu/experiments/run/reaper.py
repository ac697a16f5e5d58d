"""Ends the local Ray a ``spocu compare`` started if the command dies without shutting it down.

``ray.init`` starts its processes (GCS server, raylet, dashboard and runtime-env agents, task
workers) as descendants of the driver. After ``kill -9`` of the driver, the agents lived on for
a minute with parent 1. :func:`watch` starts this file as a separate process (its own session,
standard library only, no spocu import) that keeps a list of the driver's descendants, refreshed
every :data:`INTERVAL` seconds, and reads a pipe from the driver: the pipe closing without the
word ``done`` means that the driver died, and every process on the list that is still the same
process (same start time) is killed. :func:`release` tells it the driver shut Ray down itself.
Linux only (``/proc``); elsewhere :func:`watch` returns None and nothing changes.

Example:
    >>> import os
    >>> watcher = watch(os.getpid())
    >>> release(watcher)
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

__all__ = ["INTERVAL", "watch", "release"]

#: seconds between two looks at the driver's process tree
INTERVAL = 0.5


def _table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process (Linux /proc)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stream:
                fields = stream.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(name)] = (int(fields[1]), fields[19])  # ppid, starttime (clock ticks since boot)
    return table


def _descendants(root: int, table: dict[int, tuple[int, str]]) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found[pid] = table[pid][1]
        todo += children.get(pid, [])
    return found


def _main(driver: int) -> None:
    me, seen = os.getpid(), {}
    message = b""
    while True:
        table = _table()
        seen.update({pid: start for pid, start in _descendants(driver, table).items() if pid != me})
        ready, _, _ = select.select([sys.stdin.buffer], [], [], INTERVAL)
        if ready:
            data = os.read(sys.stdin.fileno(), 64)
            message += data
            if data:
                continue
            if message.strip() == b"done":  # the driver shut Ray down: nothing to do
                return
            table = _table()  # the driver is gone: end what it started, if it is still that process
            for pid, start in seen.items():
                if pid in table and table[pid][1] == start:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            return


def watch(driver: int) -> subprocess.Popen[bytes] | None:
    """Start the watcher of ``driver`` (this process); None where /proc is missing."""
    if not os.path.isdir("/proc/self") or sys.platform != "linux":
        return None
    return subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(driver)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def release(watcher: subprocess.Popen[bytes] | None) -> None:
    """Tell the watcher that Ray was shut down normally, and let it end."""
    if watcher is None:
        return
    assert watcher.stdin is not None  # watch() starts it with stdin=PIPE
    try:
        watcher.stdin.write(b"done")
        watcher.stdin.close()
    except OSError:
        pass
    try:
        watcher.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        watcher.kill()
        watcher.wait()


if __name__ == "__main__":
    _main(int(sys.argv[1]))
