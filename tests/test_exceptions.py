"""Which failures ato reports in a line of its own."""

from collections.abc import Callable

import pytest

from ato.exceptions import AtoError, reported_by_ato


def _raised(fn: Callable[[], None]) -> BaseException:
    with pytest.raises(BaseException) as info:  # noqa: PT011
        fn()
    return info.value


def test_an_ato_error_wrapped_by_bytewax_is_reported_by_ato() -> None:
    def wrapped() -> None:
        try:
            msg = "ClickHouse gone"
            raise AtoError(msg)
        except AtoError as exc:
            msg = "error writing output batch"
            raise RuntimeError(msg) from exc

    assert reported_by_ato(_raised(wrapped))


def test_a_bug_raised_while_handling_an_ato_error_is_a_bug() -> None:
    """Before, the chain was followed through ``__context__`` too, and the bug was reported
    as the ato error it interrupted (one line, exit 2, no traceback)."""

    def buggy_handler() -> None:
        try:
            msg = "ClickHouse gone"
            raise AtoError(msg)
        except AtoError:
            {}["missing"]  # noqa: B018 - the bug

    bug = _raised(buggy_handler)
    assert isinstance(bug, KeyError) and isinstance(bug.__context__, AtoError)
    assert not reported_by_ato(bug)


def test_an_interrupt_is_reported_by_ato() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    assert reported_by_ato(_raised(interrupted))
