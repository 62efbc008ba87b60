"""Write a file atomically: readers see the old file or the new one, never half of one. Figures are written the same
way, and a place that cannot be written (a file in the way of a folder, a read-only folder) is named in one line.

Example:
    >>> atomic_write(Path("model.safetensors"), lambda temporary: save_file(tensors, temporary))
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnets.errors import ResnetsError, WriteError, first_line

# How a full disk reaches us through the writers we call: torch.save ("unexpected pos N vs M") and safetensors (Rust's
# "os error 27/28") say it without an errno.
FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
FULL_DISK_SIGNS = ("unexpected pos", "os error 27", "os error 28")


def replaceable_mode(path: Path) -> int | None:
    """The mode of the file at `path` (None where there is none), which a rename may replace: a folder or a read-only
    file is refused, as a plain open() would refuse it (a rename replaces even a read-only file, even without root).

    Example:
        >>> replaceable_mode(Path("model.bin"))
        420
    """
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; name a file to write")
    mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else None
    if mode is not None and not mode & 0o222:
        raise PermissionError(f"{path}: is read-only; make it writable, remove it, or write elsewhere")
    return mode


def atomic_write(path: Path, write: Callable[[str], object], *, kept: str = "the file already there") -> Path:
    """Call `write(temporary_path)` beside `path`, then rename it over `path` (with the usual file mode, or the mode
    of the file it replaces; a read-only `path` is refused). When `write` fails, `WriteError` names `path` and says
    that `kept` (what `path` held) is kept; the error `write` raised is its `__cause__`."""
    path = Path(path)
    kept_mode = replaceable_mode(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:  # the message names the file asked for, not our temporary
        raise type(error)(f"{path}: cannot write there: {_why_unwritable(path.parent, error)}") from None
    os.close(descriptor)
    try:
        try:
            write(temporary)
        # Our own one-line errors, a missing package's install hint, and mistakes in the code pass through as they are.
        except (ResnetsError, ImportError, TypeError, AttributeError, NameError):
            raise
        except Exception as error:
            left = f"{kept} is kept" if path.exists() else "no file was there before, and none is left"
            raise WriteError(f"{path}: could not be written ({_why_write_failed(error)}); {left}") from error
        if kept_mode is None:
            umask = os.umask(0)
            os.umask(umask)
            kept_mode = 0o666 & ~umask  # mkstemp creates 0600; give the file the mode a plain open() would
        os.chmod(temporary, kept_mode)  # a file written over keeps its own mode
        try:
            os.replace(temporary, path)
        except OSError as error:  # the message names the file asked for, not our temporary
            raise type(error)(f"{path}: cannot write there: {error.strerror or error}") from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def _why_write_failed(error: Exception) -> str:
    reason = first_line(error, limit=200)
    full = getattr(error, "errno", None) in FULL_DISK_ERRNOS or any(sign in str(error) for sign in FULL_DISK_SIGNS)
    return f"{reason}; is the disk full?" if full else reason


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure written atomically, in the format its suffix names (PNG without one); the figure is closed.

    Example:
        >>> save_figure(figure, Path("docs/results/depth.png"))
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=dpi, format=path.suffix[1:] or "png"))
    finally:
        plt.close(figure)
    return path


def check_figure_path(path: str | os.PathLike, flag: str) -> None:
    """Refuse, before any work, a figure path that `save_figure` could not write: a folder, or a suffix that is no
    image format matplotlib writes.

    Example:
        >>> check_figure_path("bench.txt", "--plot")  # ValueError: ... not a figure format (png, svg, pdf, ...)
    """
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; name the figure to write")
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix and path.suffix[1:].lower() not in formats:
        raise ValueError(f"{flag} {path}: {path.suffix} is not a figure format ({', '.join(sorted(formats))})")


def make_folder(folder: str | os.PathLike) -> Path:
    """`folder` and its parents, made where missing; one line naming what stands in the way where they cannot be.

    Example:
        >>> make_folder("docs/results/depth")
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise type(error)(f"{folder}: cannot be made: {_why_unwritable(folder, error)}") from None
    return folder


def missing_folders(folder: str | os.PathLike) -> list[Path]:
    """`folder` and those of its parents that do not exist yet, deepest first: what `make_folder` would make, and so
    what a command that fails may take away again (`remove_if_empty`).

    Example:
        >>> missing_folders("results/new/depth")  # [Path('results/new/depth'), Path('results/new')]
    """
    folder = Path(folder)
    return [path for path in (folder, *folder.parents) if not path.exists()]


def remove_if_empty(folders: list[Path]) -> None:
    """Remove each of `folders` (deepest first) that is empty: a failed command leaves no empty folders it made, and
    never removes a file."""
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty, or gone already
            folder.rmdir()


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file standing where `folder`, or one of its parents, would have to be made; None where there is none.

    Example:
        >>> file_in_the_way("notes.txt/run")
        PosixPath('notes.txt')
    """
    folder = Path(folder)
    return next((parent for parent in (folder, *folder.parents) if parent.is_file()), None)


def _why_unwritable(folder: Path, error: OSError) -> str:
    blocking = file_in_the_way(folder)
    return f"{blocking} is a file, not a folder" if blocking is not None else (error.strerror or str(error))
