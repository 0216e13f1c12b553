"""A fork server for the crash test: imports goflypy and warms the robot once,
then forks a real server process per ``start`` line read from stdin.

Each child is a complete ``goflypy serve`` (store, writer thread, archiver,
sockets); the test SIGKILLs it by pid. Forking from a warmed parent keeps
each restart near 100 ms instead of seconds of imports and dictionary loads.
No LMDB environment is ever open in this parent.

Usage: python -m tests.crash_server CONFIG_FLAGS_JSON
stdin: "start" -> prints the child pid; "reap PID" -> prints its exit status.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

from goflypy import log, server
from goflypy.config import Config, load

PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """The child talks to nobody on our pipe, and dies if we die."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def main() -> None:
    config = load(None, json.loads(sys.argv[1]), environ={})
    robot = server.make_robot(config)
    robot.warm_up()
    server.make_robot = lambda _config: robot  # reuse the warmed robot
    print("ready", flush=True)
    children: set[int] = set()
    try:
        _serve(config, children)
    finally:
        for pid in children:  # stdin closed early: take our servers with us
            os.kill(pid, signal.SIGKILL)


def _serve(config: Config, children: set[int]) -> None:
    for line in sys.stdin:
        command = line.split() or ["quit"]
        if command[0] == "start":
            pid = os.fork()
            if pid == 0:
                _child_setup()
                log.configure(config.log_level)
                server.run(server.make_app(config), config)
                os._exit(0)
            children.add(pid)
            print(pid, flush=True)
        elif command[0] == "reap":
            children.discard(int(command[1]))
            _, status = os.waitpid(int(command[1]), 0)
            print(status, flush=True)
        else:
            return


if __name__ == "__main__":
    main()
