"""Write a file atomically: readers see the old file or the new one, never half of one.

Example:
    >>> atomic_write(Path("model.safetensors"), lambda temporary: save_file(tensors, temporary))
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[str], object]) -> Path:
    """Call `write(temporary_path)` beside `path`, then rename it over `path` (with the usual file mode)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except (FileExistsError, NotADirectoryError):
        blocking = next(parent for parent in path.parents if parent.is_file())
        raise NotADirectoryError(f"{path}: cannot write there: {blocking} is a file, not a folder") from None
    except OSError as error:  # a read-only or missing place: the message names the file asked for, not our temporary
        raise type(error)(f"{path}: cannot write there ({error.strerror or error})") from None
    os.close(descriptor)
    try:
        write(temporary)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; give the file the mode a plain open() would
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
