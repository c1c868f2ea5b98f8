"""Reads a model file in a forked child process, so that a file which makes a parser loop forever
(HDF5 does, inside attribute reads of some corrupted files) or crash cannot hang or kill the caller.

The child inherits the loaded code by ``fork`` (nothing is imported again), runs the reader and
sends the finished :class:`~torch_lstm_probe.converters.spec.ModelSpec` back through a pipe:
pickled with protocol 5, arrays as out-of-band buffers that the parent reads straight into their
final memory, and unpickled by an unpickler that builds only spec classes and NumPy arrays.
A typed error travels as its class name and message, with the child's traceback as its
``__cause__``; warnings are re-issued in the caller. When the child runs past the timeout it is
killed and :class:`~torch_lstm_probe.errors.FileLimitError` names the file; when it dies (a
crash inside a parser) :class:`~torch_lstm_probe.errors.KerasFileError` does.

Measured cost on the bundled example and the goldens: see the Security section of the README.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import io
import os
import pickle
import selectors
import signal
import struct
import threading
import time
import traceback
import warnings
from typing import Any, Callable

from torch_lstm_probe import errors as _errors
from torch_lstm_probe.errors import FileLimitError, KerasFileError

from .. import spec as _spec
from .limits import max_weights_bytes, read_isolation, short_text

try:
    import fcntl
except ImportError:  # Windows: no fork either, so files are read in-process there
    fcntl = None  # type: ignore[assignment]

__all__ = ["run_isolated", "ReaderTraceback"]

_HEADER = struct.Struct("<QQ")  # bytes of the pickled outcome, number of out-of-band buffers
_LENGTH = struct.Struct("<Q")  # bytes of one out-of-band buffer
_MAX_BUFFERS = 10_000_000
_JSON_SLACK = 1 << 30  # bytes of configs and messages allowed on top of the arrays
_PIPE_BYTES = 1 << 20  # pipe buffer asked for (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MiB by default)

_ALLOWED_GLOBALS = {(_spec.__name__, name) for name in _spec.__all__ if isinstance(getattr(_spec, name), type)} | {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}


class ReaderTraceback(Exception):
    """The exception the isolated reader raised, as text: tracebacks cannot cross processes."""


class _SpecUnpickler(pickle.Unpickler):
    """Builds only spec classes and NumPy arrays: the outcome of a reader, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"the isolated reader sent a {module}.{name}, which is not part of a model spec")


# ---------------------------------------------------------------- child side
def _describe(err: BaseException) -> dict[str, Any]:
    kind = None
    for cls in type(err).__mro__:
        if cls.__module__ == _errors.__name__ and cls.__name__ in _errors.__all__:
            kind = cls.__name__
            break
    if kind is None and type(err) in (MemoryError, FileNotFoundError, PermissionError):
        kind = type(err).__name__
    args = tuple(a if isinstance(a, (str, int, float)) else str(a) for a in err.args)
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return {
        "kind": kind,
        "type": f"{type(err).__module__}.{type(err).__qualname__}",
        "args": args,
        "text": text[-8000:],
    }


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = os.write(fd, view)
        view = view[written:]


def _send(fd: int, outcome: tuple[Any, ...]) -> None:
    buffers: list[pickle.PickleBuffer] = []
    body = pickle.dumps(outcome, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    _write_all(fd, _HEADER.pack(len(body), len(raws)) + b"".join(_LENGTH.pack(raw.nbytes) for raw in raws))
    _write_all(fd, body)
    for raw in raws:
        _write_all(fd, raw)


def _child_main(function: Callable[..., Any], args: tuple[Any, ...], fd: int) -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the caller handles Ctrl-C and ends this process
        gc.freeze()  # objects inherited from the caller are never finalized here
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome: tuple[Any, ...] = ("ok", function(*args))
            except BaseException as err:
                outcome = ("error", _describe(err))
        notes = [(str(w.message), w.category.__name__) for w in caught]
        _send(fd, (*outcome, notes))
    except BaseException as err:
        with contextlib.suppress(BaseException):
            _send(fd, ("error", _describe(err), []))
    finally:
        os._exit(0)


# ---------------------------------------------------------------- caller side
class _ChildGone(Exception):
    pass


class _TimedOut(Exception):
    pass


class _Pipe:
    """Reads exact byte counts from the child's pipe, never waiting past the deadline."""

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.selector = selectors.DefaultSelector()
        self.selector.register(fd, selectors.EVENT_READ)

    def close(self) -> None:
        self.selector.close()

    def exact(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        done = 0
        while done < size:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not self.selector.select(remaining):
                raise _TimedOut
            got = os.readv(self.fd, [view[done:]])
            if got == 0:
                raise _ChildGone
            done += got
        return buffer


def _receive(pipe: _Pipe) -> tuple[Any, ...]:
    body_size, count = _HEADER.unpack(pipe.exact(_HEADER.size))
    if count > _MAX_BUFFERS:
        raise pickle.UnpicklingError(f"the isolated reader announced {count} buffers")
    lengths = struct.unpack(f"<{count}Q", pipe.exact(_LENGTH.size * count)) if count else ()
    if body_size + sum(lengths) > max_weights_bytes() + _JSON_SLACK:
        raise pickle.UnpicklingError("the isolated reader announced more bytes than any file may produce")
    body = pipe.exact(body_size)
    buffers = [pipe.exact(length) for length in lengths]
    return _SpecUnpickler(io.BytesIO(body), buffers=buffers).load()


def _rebuild(record: dict[str, Any], source: str) -> BaseException:
    kind, args = record.get("kind"), tuple(record.get("args", ()))
    cause = ReaderTraceback(f"{record.get('type')} in the isolated reader:\n{record.get('text', '')}")
    err: BaseException
    if kind in _errors.__all__:
        err = getattr(_errors, kind)(*args)
    elif kind == "MemoryError":
        err = MemoryError(f"{source}: the isolated reader ran out of memory. {short_text(' '.join(map(str, args)))}")
    elif kind in ("FileNotFoundError", "PermissionError"):
        err = getattr(builtins, kind)(*args)
    else:
        text = short_text(str(args[0]) if args else "")
        err = KerasFileError(f"{source}: the file is malformed and cannot be read ({record.get('type')}: {text}).")
    err.__cause__ = cause
    return err


def _reissue(notes: list[tuple[str, str]]) -> None:
    for message, category_name in notes:
        category = getattr(builtins, category_name, None)
        if not (isinstance(category, type) and issubclass(category, Warning)):
            category = UserWarning
        warnings.warn(message, category, stacklevel=4)


def _fork() -> int:
    """Forks while holding h5py's global lock, so no other thread is inside HDF5 at that moment."""
    import h5py

    phil = getattr(getattr(h5py, "_objects", None), "phil", None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*fork\(\).*", category=DeprecationWarning)
        with phil if phil is not None else contextlib.nullcontext():
            return os.fork()


def _reap(pid: int, wait: bool) -> int | None:
    """The child's wait status, or None if it has not ended (or was reaped elsewhere)."""
    try:
        done, status = os.waitpid(pid, 0 if wait else os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


def _death(status: int | None) -> str:
    if status is not None and os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        hint = " (SIGKILL: often the system running out of memory)" if number == signal.SIGKILL else ""
        return f"was killed by signal {name}{hint}"
    if status is not None and os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)} before answering"
    return "ended before answering"


_FORK_LOCK = threading.Lock()


def run_isolated(function: Callable[..., Any], args: tuple[Any, ...], source: str, timeout_s: float) -> Any:
    """Returns ``function(*args)`` computed in a forked child that may take at most ``timeout_s``.

    With ``TORCH_LSTM_PROBE_READ_ISOLATION=off`` (the default where ``fork`` is missing) the
    function runs in the calling process.

    Raises:
        FileLimitError: the child ran past ``timeout_s`` (it is killed).
        KerasFileError: the child died while reading (a parser crashed on the file).
        TorchLstmProbeError: whatever typed error the reader raised, rebuilt in this process.
    """
    if read_isolation() == "off":
        return function(*args)
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # fewer round trips for large weights (Linux)
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
    try:
        with _FORK_LOCK:
            pid = _fork()
    except OSError as err:
        os.close(read_fd)
        os.close(write_fd)
        warnings.warn(
            f"{source}: cannot fork the isolated reader ({err}); reading in this process, without the hang guard.",
            RuntimeWarning,
            stacklevel=3,
        )
        return function(*args)
    if pid == 0:  # the child never returns from here
        os.close(read_fd)
        _child_main(function, args, write_fd)
    os.close(write_fd)
    pipe = _Pipe(read_fd, time.monotonic() + timeout_s)
    status: int | None = None
    try:
        outcome = _receive(pipe)
        status = _reap(pid, wait=False)
        if status is None:  # the child is exiting; its teardown need not delay the caller
            threading.Thread(target=_reap, args=(pid, True), name="torch-lstm-probe-reap", daemon=True).start()
            status = 0
    except _TimedOut:
        raise FileLimitError(
            f"{source}: reading the file took longer than {timeout_s:.0f} s and was stopped. Corrupted HDF5 files can "
            "make HDF5 loop forever. If the file is genuine (very large, or on a slow disk), allow more time: "
            "TORCH_LSTM_PROBE_READ_TIMEOUT=<seconds>."
        ) from None
    except _ChildGone:
        status = _reap(pid, wait=True)
        raise KerasFileError(
            f"{source}: the process reading the file {_death(status)}: a parser crashed on the file, which is "
            "corrupt (or memory ran out)."
        ) from None
    except (pickle.UnpicklingError, struct.error, EOFError, ValueError, TypeError, AttributeError) as err:
        raise KerasFileError(
            f"{source}: the isolated reader sent an unreadable answer ({short_text(str(err))})."
        ) from err
    finally:
        pipe.close()
        os.close(read_fd)
        if status is None and _reap(pid, wait=False) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid, wait=True)
    kind, value, notes = outcome
    _reissue(notes)
    if kind == "ok":
        return value
    raise _rebuild(value, source)
