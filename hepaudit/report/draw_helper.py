"""A helper interpreter that draws figures for the report (:mod:`hepaudit.report.drawing`).

``python -m hepaudit.report.draw_helper`` reads length-prefixed pickles on stdin: first
the report's style and the caller's own matplotlib settings (its rcParams and the font files it
knows, when it has imported matplotlib), then one ``(function, args)`` per figure job, and answers each with
``(True, figures)`` or ``(False, why)`` on its stdout. :class:`Helper` starts one and talks to it.
A fresh interpreter, not a fork of the audit: a forked audit would inherit uproot's and
onnxruntime's threads mid-flight.

More drawing processes are copies of that interpreter (:class:`Clone`, on Linux): once it has
imported matplotlib and applied the report's settings it forks one copy per socket it was
started with, each answering jobs on its socket. A copy costs milliseconds, where another fresh
interpreter costs a second of imports on a core the audit is using.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

from hepaudit.results import Figure

_HEADER = struct.Struct("<Q")

#: drawing processes beyond the first are forks of it (:class:`Clone`): Linux only, where a
#: fork of a single-threaded interpreter that has loaded matplotlib is safe and cheap
CAN_CLONE = sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "socketpair")


def _write(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _send(stream: IO[bytes], obj: Any) -> None:
    _write(stream, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(stream: IO[bytes]) -> Any:
    # the only writer is the other end of a pipe or socket pair between this process and the one
    # that started it or its helper (never a file or a socket another user can reach): the same
    # trust as an import
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("the drawing helper closed its pipe")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the drawing helper closed its pipe mid-message")
    return pickle.loads(data)


#: what a helper draws with: the report's style (``[report] style``), and this process's own
#: rcParams and font files when it has imported matplotlib (None: matplotlib's defaults, as
#: the helper's own import finds them)
Settings = tuple[str, dict[str, Any] | None, list[str] | None]


def settings_now(style: str = "matplotlib") -> Settings:
    """The settings for a helper to draw in ``style`` on top of matplotlib's settings as they
    are here and now. A process that has not imported matplotlib has changed none of them, and
    does not import it for this (the helper has it imported already)."""
    if "matplotlib" not in sys.modules:
        return style, None, None
    import matplotlib
    from matplotlib import font_manager

    rc: dict[str, Any] = {str(k): v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}
    return style, rc, sorted({str(f.fname) for f in font_manager.fontManager.ttflist})


class _Channel:
    """One drawing process seen from the audit: jobs go down ``_in``, answers come up ``_out``."""

    _in: IO[bytes]
    _out: IO[bytes]

    def __init__(self) -> None:
        self.alive, self.ready, self.configured = True, False, False

    def wait_ready(self) -> bool:
        """Wait until the process has set matplotlib up; False when it never will (or was never
        given the settings to set it up with)."""
        if self.alive and self.configured and not self.ready:
            try:
                self._started(_receive(self._out))
                self.ready = True
            except Exception:
                self.alive = False
        return self.alive and self.ready

    def _started(self, answer: Any) -> None:
        if not answer[0]:
            raise RuntimeError("the drawing process could not start")

    def draw(self, call: tuple[Callable[..., list[Figure]], tuple[Any, ...]]) -> list[Figure] | None:
        """``function(*args)`` drawn by the process, or None when it could not (draw it here)."""
        if not self.wait_ready():
            return None
        try:
            message = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a class or option a fresh interpreter could not rebuild
            return None
        try:
            _write(self._in, message)
            ok, answer = _receive(self._out)
        except Exception:  # the process is gone: the audit's process draws the rest
            self.alive = False
            return None
        return answer if ok else None


class Helper(_Channel):
    """One drawing interpreter, started at construction: it imports matplotlib while it waits
    for :meth:`configure` (the report's settings; given at construction, sent at once), then
    :meth:`draw` one job at a time. Started early (:func:`hepaudit.report.drawing.started_early`),
    its imports overlap the audit's own start-up instead of the report's drawing.

    ``clones``: up to that many copies of it may be asked for in :meth:`configure` (a socket
    each is handed to the interpreter now; Linux only, :data:`CAN_CLONE`)."""

    def __init__(self, settings: Settings | None = None, formats: tuple[str, ...] = (), dpi: int = 100,
                 clones: int = 0) -> None:
        super().__init__()
        # the helper imports what this process imports: its sys.path (a plugin or script
        # folder added at run time included)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        pairs = [socket.socketpair() for _ in range(clones if CAN_CLONE else 0)]
        try:
            ends = [theirs.fileno() for _, theirs in pairs]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hepaudit.report.draw_helper", *map(str, ends)], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=ends)
        except BaseException:
            for ours, _ in pairs:
                ours.close()
            raise
        finally:
            for _, theirs in pairs:  # the interpreter holds its own copies now
                theirs.close()
        self._sockets = [ours for ours, _ in pairs]
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin
        self._out = self.process.stdout
        self.clones: list[Clone] = []
        if settings is not None:
            self.configure(settings, formats, dpi, len(self._sockets))

    def configure(self, settings: Settings, formats: tuple[str, ...], dpi: int, clones: int = 0) -> list[Clone]:
        """Send the report's style and matplotlib settings, figure formats and resolution (once),
        and ask for ``clones`` copies of the helper (as many as it has sockets for, at most):
        returned, and kept in :attr:`clones`."""
        if self.configured:
            return self.clones
        self.configured = True
        wanted, spare = self._sockets[:max(clones, 0)], self._sockets[max(clones, 0):]
        for sock in spare:  # the helper closes its ends of these: nothing will use them
            sock.close()
        self._sockets = []
        self.clones = [Clone(sock) for sock in wanted]
        try:
            _send(self._in, (settings, formats, dpi, len(wanted)))
        except OSError:
            self.alive = False
            for clone in self.clones:
                clone.discard()
            self.clones = []
        return self.clones

    def stop(self) -> None:
        """End the helper now, whatever it is doing (it holds no job of this pool's)."""
        with contextlib.suppress(OSError):
            self.process.kill()

    def discard(self) -> None:
        """Stop the helper and wait for it (one that will draw nothing more)."""
        self.stop()
        self.close()

    def close(self) -> None:
        for sock in self._sockets:  # never configured: its copies were never made
            sock.close()
        self._sockets = []
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a helper stuck in a draw
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self._out.close()


class Clone(_Channel):
    """A copy of a :class:`Helper`, forked by it once configured, talking over a socket. Its
    first answer is its process id; closing the socket ends it."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.configured = True  # a copy starts with its helper's settings
        self.pid: int | None = None
        self._socket = sock
        self._in = sock.makefile("wb")
        self._out = sock.makefile("rb")

    def _started(self, answer: Any) -> None:
        super()._started(answer)
        self.pid = int(answer[1])

    def stop(self) -> None:
        """End the copy now, whatever it is doing (it holds no job of this pool's)."""
        if self.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):  # a copy not yet forked (or never to be) reads end-of-file
            self._socket.shutdown(socket.SHUT_RDWR)

    def discard(self) -> None:
        self.stop()
        self.close()

    def close(self) -> None:
        """Closing the socket ends the copy (end-of-file); its helper reaps it."""
        for stream in (self._in, self._out):
            with contextlib.suppress(OSError):
                stream.close()
        self._socket.close()


def _warm_up() -> None:
    """What drawing any figure imports and builds first (pyplot, the font list, mplhep's fonts,
    the report's figure module), done while the helper waits for its settings."""
    import matplotlib.pyplot  # noqa: F401
    from matplotlib import font_manager

    _ = font_manager.fontManager.ttflist
    with contextlib.suppress(ImportError):  # the report's style comes as rcParams; this is its fonts
        import mplhep  # type: ignore[import-untyped]  # noqa: F401
    import hepaudit.report.figures  # noqa: F401


def _serve(requests: IO[bytes], answers: IO[bytes], sockets: list[socket.socket]) -> None:
    """The helper's loop: the report's settings first, then one explainer per message until EOF.
    Once set up, it forks the copies asked for, one per socket in ``sockets``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager

    from hepaudit.report.style import figure_style

    _warm_up()
    (style, rc, fonts), formats, dpi, clones = _receive(requests)

    known = {str(f.fname) for f in font_manager.fontManager.ttflist}
    for path in fonts or ():
        if path not in known:
            with contextlib.suppress(Exception):  # a font this machine cannot read: matplotlib falls back
                font_manager.fontManager.addfont(path)
    if rc:
        matplotlib.rcParams.update(rc)
    with figure_style(style, formats, dpi):  # the style on top of the caller's settings, as it would draw
        if clones:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the copies are reaped as they end
        for i, sock in enumerate(sockets[:clones]):
            if os.fork() == 0:  # a copy: it answers on its socket only
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for stream in (requests, answers):  # the helper's pipes stay the helper's
                    stream.close()
                for j, other in enumerate(sockets):
                    if j != i:
                        other.close()
                try:
                    _answer(sock.makefile("rb"), sock.makefile("wb"), os.getpid())
                finally:
                    os._exit(0)
        for sock in sockets:
            sock.close()
        _answer(requests, answers, "ready")
    if clones:  # the audit closes the copies first: wait until they have ended (ECHILD then)
        with contextlib.suppress(ChildProcessError):
            while True:
                os.waitpid(-1, 0)


def _answer(requests: IO[bytes], answers: IO[bytes], hello: object) -> None:
    """Say ``hello`` (ready), then answer one ``(function, args)`` after another until EOF."""
    _send(answers, (True, hello))
    while True:
        try:
            function, args = _receive(requests)
        except EOFError:
            return
        except Exception as exc:  # a class this interpreter cannot import
            _send(answers, (False, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            _send(answers, (True, list(function(*args))))
        except Exception as exc:
            _send(answers, (False, f"{type(exc).__name__}: {exc}"))


def _main() -> None:
    # the answers go down a private copy of stdout; fd 1 then points at stderr, so that a print
    # in a plugin's draw cannot corrupt the stream
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sockets = [socket.socket(fileno=int(fd)) for fd in sys.argv[1:]]  # one per copy it may fork
    _serve(sys.stdin.buffer, answers, sockets)
    # every answer is flushed: leave without tearing matplotlib and numpy down (a few tenths of
    # a second the audit would wait for when it closes its helpers)
    os._exit(0)


if __name__ == "__main__":
    _main()
