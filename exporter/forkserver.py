"""Where probe workers are forked from on Linux: a copy of the serving process made before it
loads a config or starts a thread, which forks a worker whenever the serving process asks.

A worker forked from it shares the pages of everything the serving process had imported,
with the serving process and with the other workers. multiprocessing's own fork server is
a new interpreter that imports the exporter again and starts a resource tracker beside
it: measured with 2 workers and 10,000 paths (bench/run.py), those two were 27 MiB of PSS
of the 126 the exporter's processes held at idle.

Both sides freeze what they hold at the fork (``gc.freeze``), and keep it frozen: the
serving process and every worker freeze each new config or plan share on top, never thaw
(gcpause.CollectionPause's ``keep_frozen``).

The fork server holds no config, no event loop and no thread. It forks only, reaps the
workers it forked and writes each one's exit status to a pipe the serving process reads
(as multiprocessing's does), and exits when the serving process closes its socket (or
dies); a worker exits when its inbox closes.
"""

from __future__ import annotations

import gc
import os
import select
import pickle
import signal
import socket
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Entry = Callable[..., None]  # entry(inbox, outbox, *args) in the forked worker


class ForkServer:
    """Made in the serving process's main thread, before any other thread or event loop."""

    def __init__(self, entry: Entry) -> None:
        if threading.active_count() > 1:
            raise RuntimeError("the probe workers' fork server must be started before any thread")
        gc.collect()  # no garbage for the copies to inherit
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the fork server, measured by the tests that use it
            ours.close()
            code = 0
            try:
                _serve(theirs, entry)
            except BaseException:  # noqa: BLE001 - whatever it was, say it and go
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        # Ours too: the serving process's collections must not walk what it shares with the
        # fork server either. A full collection writes to every object it walks, and each
        # page written is copied: measured at 10,000 paths (bench/run.py), the serving
        # process's first config made 13 MiB of those pages its own, held twice from then on.
        gc.freeze()
        self.pid = pid
        self._socket = ours
        self._lock = threading.Lock()  # one request and its answer at a time (workers start on threads)

    def start(self, inbox: Connection, outbox: Connection, *args: Any) -> ForkedProcess:
        """Fork a worker that runs ``entry(inbox, outbox, *args)``; the caller closes its own
        copies of the two ends it passed."""
        status_reader, status_writer = os.pipe()
        try:
            with self._lock:
                socket.send_fds(self._socket, [pickle.dumps(args)], [inbox.fileno(), outbox.fileno(), status_writer])
                answer = self._socket.recv(16)
        except BaseException:
            os.close(status_reader)
            raise
        finally:
            os.close(status_writer)
        if len(answer) != 4:
            os.close(status_reader)
            raise OSError("the probe workers' fork server is gone")
        return ForkedProcess(struct.unpack("<i", answer)[0], status_reader)

    def close(self) -> None:
        """The fork server exits when its socket closes; its children go when their inboxes do."""
        self._socket.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _serve(sock: socket.socket, entry: Entry) -> None:  # pragma: no cover - runs in the fork server
    # what the serving process imported stays out of the collector's sight in every copy: a
    # collection writes to each object it walks, and each page written is copied
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the serving process decides when we stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    woken, wake = os.pipe()  # a child's exit wakes the loop below
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status: dict[int, int] = {}  # worker pid -> where its exit status goes
    while True:
        ready, _, _ = select.select([sock.fileno(), woken], [], [])
        if woken in ready:
            os.read(woken, 512)
            _reap(status)
        if sock.fileno() not in ready:
            continue
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
        except OSError:
            return
        if not message:  # the serving process closed the socket, or died
            return
        pid = os.fork()
        if pid == 0:
            for fd in (woken, wake, fds[2], *status.values()):
                os.close(fd)
            _run_worker(sock, entry, fds[0], fds[1], pickle.loads(message))
        os.close(fds[0])
        os.close(fds[1])
        status[pid] = fds[2]
        sock.send(struct.pack("<i", pid))


def _reap(status: dict[int, int]) -> None:  # pragma: no cover - runs in the fork server
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        fd = status.pop(pid, None)
        if fd is not None:
            try:
                os.write(fd, struct.pack("<i", os.waitstatus_to_exitcode(code)))
            except OSError:  # the serving process no longer listens
                pass
            os.close(fd)


def _run_worker(sock: socket.socket, entry: Entry, inbox: int, outbox: int,
                args: tuple[Any, ...]) -> None:  # pragma: no cover - runs in a worker
    sock.close()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        entry(Connection(inbox), Connection(outbox), *args)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkedProcess:
    """A worker forked by the fork server: the part of multiprocessing.Process the pool uses.
    Its exit status (negative: the signal that ended it) comes from the fork server."""

    def __init__(self, pid: int, status: int) -> None:
        self.pid = pid
        self._status: int | None = status  # the pipe the fork server writes the exit status to
        self._code: int | None = None
        os.set_blocking(status, False)

    def _poll(self) -> None:
        if self._status is None:
            return
        try:
            data = os.read(self._status, 4)
        except BlockingIOError:
            return  # still running
        if len(data) == 4:
            self._code = struct.unpack("<i", data)[0]
        os.close(self._status)  # read, or the fork server is gone (the status is not known)
        self._status = None

    @property
    def exitcode(self) -> int | None:
        self._poll()
        return self._code

    def is_alive(self) -> bool:
        self._poll()
        return self._status is not None

    def kill(self) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def join(self, timeout: float) -> None:
        if self._status is not None:
            select.select([self._status], [], [], timeout)
        self._poll()
