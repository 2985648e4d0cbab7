"""A helper interpreter that draws figures for the report (:mod:`hepaudit.report.drawing`).

``python -m hepaudit.report.draw_helper`` reads length-prefixed pickles on stdin: first
the report's style and the caller's own matplotlib settings (its rcParams and the font files it
knows, when it has imported matplotlib), then one ``(function, args)`` per figure job, and answers each with
``(True, figures)`` or ``(False, why)`` on its stdout. :class:`Helper` starts one and talks to it.
Fresh interpreters, not forks: a forked process would inherit uproot's and onnxruntime's
threads mid-flight.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

from hepaudit.results import Figure

_HEADER = struct.Struct("<Q")


def _write(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _send(stream: IO[bytes], obj: Any) -> None:
    _write(stream, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(stream: IO[bytes]) -> Any:
    # the only writer is the other end of a pipe between this process and the one that started
    # it (never a file or a socket another user can reach): the same trust as an import
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


class Helper:
    """One drawing interpreter, started at construction: it imports matplotlib while it waits
    for :meth:`configure` (the report's settings; given at construction, sent at once), then
    :meth:`draw` one job at a time. Started early (:func:`hepaudit.report.drawing.started_early`),
    its imports overlap the audit's own start-up instead of the report's drawing."""

    def __init__(self, settings: Settings | None = None, formats: tuple[str, ...] = (), dpi: int = 100) -> None:
        # the helper imports what this process imports: its sys.path (a plugin or script
        # folder added at run time included)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.process = subprocess.Popen([sys.executable, "-m", "hepaudit.report.draw_helper"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in: IO[bytes] = self.process.stdin
        self._out: IO[bytes] = self.process.stdout
        self.alive, self.ready, self.configured = True, False, False
        if settings is not None:
            self.configure(settings, formats, dpi)

    def configure(self, settings: Settings, formats: tuple[str, ...], dpi: int) -> None:
        """Send the report's style and matplotlib settings, figure formats and resolution (once)."""
        if self.configured:
            return
        self.configured = True
        try:
            _send(self._in, (settings, formats, dpi))
        except OSError:
            self.alive = False

    def wait_ready(self) -> bool:
        """Wait until the helper has set matplotlib up; False when it never will (or was never
        given the settings to set it up with)."""
        if self.alive and self.configured and not self.ready:
            try:
                self.ready = bool(_receive(self._out)[0])
            except Exception:
                self.alive = False
        return self.alive and self.ready

    def draw(self, call: tuple[Callable[..., list[Figure]], tuple[Any, ...]]) -> list[Figure] | None:
        """``function(*args)`` drawn by the helper, or None when it could not (draw it here)."""
        if not self.wait_ready():
            return None
        try:
            message = pickle.dumps(call, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # a class or option a fresh interpreter could not rebuild
            return None
        try:
            _write(self._in, message)
            ok, answer = _receive(self._out)
        except Exception:  # the helper is gone: this process draws the rest
            self.alive = False
            return None
        return answer if ok else None

    def stop(self) -> None:
        """End the helper now, whatever it is doing (it holds no job of this pool's)."""
        with contextlib.suppress(OSError):
            self.process.kill()

    def discard(self) -> None:
        """Stop the helper and wait for it (one that will draw nothing more)."""
        self.stop()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a helper stuck in a draw
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self._out.close()


def _warm_up() -> None:
    """What drawing any figure imports and builds first (pyplot, the font list, mplhep's fonts,
    the report's figure module), done while the helper waits for its settings."""
    import matplotlib.pyplot  # noqa: F401
    from matplotlib import font_manager

    _ = font_manager.fontManager.ttflist
    with contextlib.suppress(ImportError):  # the report's style comes as rcParams; this is its fonts
        import mplhep  # type: ignore[import-untyped]  # noqa: F401
    import hepaudit.report.figures  # noqa: F401


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The helper's loop: the report's settings first, then one explainer per message until EOF."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager

    from hepaudit.report.style import figure_style

    _warm_up()
    (style, rc, fonts), formats, dpi = _receive(requests)

    known = {str(f.fname) for f in font_manager.fontManager.ttflist}
    for path in fonts or ():
        if path not in known:
            with contextlib.suppress(Exception):  # a font this machine cannot read: matplotlib falls back
                font_manager.fontManager.addfont(path)
    if rc:
        matplotlib.rcParams.update(rc)
    with figure_style(style, formats, dpi):  # the style on top of the caller's settings, as it would draw
        _send(answers, (True, "ready"))
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
    _serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    _main()
