"""The numba decorator of the kernels that allocate nothing."""

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

F = TypeVar("F", bound=Callable[..., Any])


def njit_no_refcount(function: F) -> F:
    """``njit(cache=True, nogil=True)`` without numba's reference counting (``_nrt=False``).

    With reference counting, every call of a compiled function that takes arrays counts
    references to them with atomic instructions; in the scanner (several helper calls per
    message) that was a third of its time. A kernel compiled this way cannot allocate
    arrays (numba refuses to compile it), so its caller passes every output in.
    """
    compiled = njit(cache=True, nogil=True, _nrt=False)(function)  # type: ignore[call-overload]
    return cast(F, compiled)
