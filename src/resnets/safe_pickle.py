"""Unpickling that admits numpy arrays in plain containers and nothing else: a pickle can name any callable.

Example:
    >>> ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
"""

import pickle


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a callable outside the allowed few; nothing was called."""


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in plain containers and refuses everything else (a pickle can name any callable)."""

    ALLOWED = {
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise RefusedGlobal(f"global '{module}.{name}' is not allowed")
        return super().find_class(module, name)
