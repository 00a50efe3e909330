"""The prefetch intrinsic: compiles to a prefetch instruction and changes no result."""

import numpy as np
from numba import njit

from ato.jit import prefetch


@njit(nogil=True)
def _gather_sum(values: np.ndarray, rows: np.ndarray, index: np.ndarray) -> float:
    total = 0.0
    for k in range(len(index)):
        if k + 4 < len(index):
            prefetch(values, index[k + 4])
            prefetch(rows, index[k + 4])
        total += values[index[k]] + rows[index[k], 1]
    return total


def test_prefetch_emits_the_instruction_and_keeps_results() -> None:
    rng = np.random.default_rng(3)
    values = rng.random(1000)
    rows = rng.random((1000, 3))
    index = rng.integers(0, 1000, 500)
    assert _gather_sum(values, rows, index) == sum(values[i] + rows[i, 1] for i in index.tolist())
    (signature,) = _gather_sum.signatures
    assembly = _gather_sum.inspect_asm(signature)
    assert "prefetcht0" in assembly
