"""numba helpers: the decorator of the kernels that allocate nothing, and a prefetch."""

from collections.abc import Callable
from typing import Any, TypeVar, cast

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

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


@intrinsic
def _prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """``prefetch(array, i)`` in a numba kernel: start loading the cache line of ``array[i]``
    (of row ``i``'s first field for a 2-D array) without waiting for it.

    No effect on results, so plain-Python twins leave it out. Kernels that touch random slots
    use it to overlap the cache misses of the next events with the work on this one.
    """
    if not isinstance(array, types.Array) or not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type, index_type = signature.args
        data = context.make_array(array_type)(context, builder, args[0])
        indices = [context.cast(builder, args[1], index_type, types.intp)]
        indices += [ir.Constant(ir.IntType(64), 0)] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, data, indices, wraparound=False
        )
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        # read, keep in all cache levels, data cache
        builder.call(function, [builder.bitcast(pointer, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


prefetch = cast(Callable[[Any, Any], None], _prefetch)
