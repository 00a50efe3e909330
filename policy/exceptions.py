"""Errors raised by the policy package."""

from ato.exceptions import AtoError


class PolicyError(AtoError):
    """The policy file is invalid; the message names the file and the field."""


class ProfileError(AtoError):
    """A profile value is invalid; the message names the field."""


class ProfileFileError(ProfileError):
    """A profile file has bad rows; ``errors`` lists each as ``file:line: field 'x': problem``
    (the first of them, when there are very many: ``count`` counts all).

    Nothing of such a file is loaded: fix the rows and load it again.
    """

    def __init__(self, path: str, errors: list[str], count: int | None = None) -> None:
        self.path = path
        self.errors = errors
        self.count = len(errors) if count is None else count  # bad rows, named or not
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {self.count - 20} more" if self.count > 20 else ""
        super().__init__(f"{path}: {self.count} bad row(s), nothing loaded:\n  {shown}{more}")


class LiveStateError(AtoError):
    """Reading or writing live journey state in Redis failed; the url's password is masked.

    ``transient`` is True for connection errors and timeouts: the same changes can be sent
    again once Redis answers (see ``policy.live_state.LiveStateWriter.write``).
    """

    def __init__(self, message: str, transient: bool) -> None:
        self.transient = transient
        super().__init__(message)
