"""Profile files (CSV with a header row, or JSON lines) and the loader behind ``ato profiles load``.

Every bad row is reported: :func:`check_profiles` reads the whole file, collects the errors
and raises :class:`~policy.exceptions.ProfileFileError` (``errors`` = one
``file:line: field 'x': problem`` per row, the first 10,000, with the count of all); a file
with any bad row loads nothing. Files are read as streams, twice to load them (checked
whole, then written), so a file of any size loads in little memory. A CSV header naming
unknown columns, or lacking ``client_id`` or ``segment``, is one error for the whole file.
"""

import csv
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import redis

from ato.config import EngineSettings, RedisSettings
from policy.connection import connect
from policy.exceptions import ProfileError, ProfileFileError
from policy.profiles import FIELDS, Profile, ProfileStore, parse_profile

MAX_CLIENT_ID_LEN = EngineSettings().max_client_id_len

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


KEPT_ERRORS = 10_000  # bad rows named in a ProfileFileError; all of them are counted


def read_profiles(path: Path | str, max_id_len: int = MAX_CLIENT_ID_LEN) -> list[Profile]:
    """Every profile of a ``.csv`` or ``.jsonl``/``.ndjson``/``.json`` (one object a line)
    file, checked first (:func:`check_profiles`)."""
    check_profiles(path, max_id_len)
    return [item for _, item in _checked(Path(path), max_id_len) if isinstance(item, Profile)]


def check_profiles(path: Path | str, max_id_len: int = MAX_CLIENT_ID_LEN) -> int:
    """The number of profiles in the file, once every row is known to be good; else
    :class:`ProfileFileError` naming the bad rows (the first :data:`KEPT_ERRORS` of them,
    in file order, and counting all).

    Blank lines are ignored; a client id listed twice, or longer than ``max_id_len``
    (``engine.max_client_id_len``: events with longer ids are dead letters), is an error, and
    so is a file with no profile at all, or one that is not a regular file (a pipe). The
    file is read as a stream, holding 16 bytes a profile at most (a hash of its id, and a
    sorted copy) to find ids listed twice: a file larger than memory loads too.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a pipe could not be read twice
        msg = f"{path}: not a regular file (profiles are read twice: checked, then loaded)"
        raise ProfileError(msg)
    errors: list[tuple[int, str]] = []
    bad = 0
    id_hashes = array("q")
    for line, item in _checked(path, max_id_len):
        if isinstance(item, str):
            bad += 1
            if len(errors) < KEPT_ERRORS:
                errors.append((line, item))
            continue
        id_hashes.append(hash(item.client_id))
    repeated = _repeated_ids(path, max_id_len, np.frombuffer(id_hashes, np.int64))
    bad += len(repeated)
    errors = sorted(errors + repeated[:KEPT_ERRORS])[:KEPT_ERRORS]
    if bad:
        named = [f"{path}:{line}: {error}" for line, error in errors]
        raise ProfileFileError(str(path), named, bad)
    if not id_hashes:
        msg = f"{path}: no profiles in the file"
        raise ProfileError(msg)
    return len(id_hashes)


def _repeated_ids(path: Path, max_id_len: int, id_hashes: np.ndarray) -> list[tuple[int, str]]:
    """(line, error) of each profile whose client id an earlier line has: the hashes found
    twice, then the file read again for the ids with those hashes (few: none in a good
    file) to tell repeats from hash collisions."""
    ordered = np.sort(id_hashes)
    twice = set(ordered[1:][ordered[1:] == ordered[:-1]].tolist())
    if not twice:
        return []
    first_line: dict[str, int] = {}
    repeated = []
    for line, item in _checked(path, max_id_len):
        if isinstance(item, Profile) and hash(item.client_id) in twice:
            if item.client_id in first_line:
                text = f"field 'client_id': {item.client_id!r} already on line"
                repeated.append((line, f"{text} {first_line[item.client_id]}"))
            else:
                first_line[item.client_id] = line
    return repeated


def _checked(path: Path, max_id_len: int) -> Iterator[tuple[int, Profile | str]]:
    """(line, profile or what is wrong with the row) of each row, as the file is read; ids
    listed twice are not looked for here."""
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    elif suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    else:
        msg = f"{path}: unknown profile file type {suffix!r} (use .csv or .jsonl)"
        raise ProfileError(msg)
    for line, row in rows:
        if isinstance(row, str):
            yield line, row
            continue
        try:
            profile = parse_profile(row)
        except ProfileError as exc:
            yield line, str(exc)
            continue
        if len(profile.client_id) > max_id_len:
            yield (
                line,
                (
                    f"field 'client_id': longer than {max_id_len} characters"
                    " (engine.max_client_id_len: events with such ids are dead letters)"
                ),
            )
            continue
        yield line, profile


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, object] | str]]:
    """(line number, row or problem); line numbers count the header as line 1."""
    # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                yield 1, "field 'client_id': the header row is missing (empty file)"
                return
            names = [h.strip() for h in header]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                yield 1, f"header: column(s) {', '.join(map(repr, twice))} given twice"
                return
            problem = _header_problem(names)
            if problem:
                yield 1, f"header: {problem}"
                return
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    yield line, f"expected {len(names)} columns, got {len(row)}"
                    continue
                yield line, dict(zip(names, row, strict=True))
        except csv.Error as exc:  # a field over csv's size limit, say: the rest is unreadable
            yield reader.line_num, f"not readable as CSV: {exc}"


def _header_problem(names: list[str]) -> str | None:
    """Why a CSV header row cannot be read as profiles (None when it can)."""
    allowed = ("client_id", *FIELDS)
    unknown = [name for name in names if name not in allowed]
    if unknown:
        return f"unknown column {unknown[0]!r} (allowed: {', '.join(allowed)}; comma-separated)"
    missing = [name for name in ("client_id", "segment") if name not in names]
    if missing:
        return f"column {missing[0]!r} is required"
    return None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object] | str]]:
    """(line number, row or problem) of each line that is not blank."""
    with path.open("rb") as handle:
        for line, text in enumerate(handle, start=1):
            raw = text.removeprefix(b"\xef\xbb\xbf") if line == 1 else text  # as in CSV files
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield line, f"not JSON: {exc}"
                continue
            if not isinstance(doc, dict):
                yield line, f"expected a JSON object, got {type(doc).__name__}"
                continue
            yield line, doc


def load_profiles_file(
    settings: RedisSettings,
    path: Path | str,
    chunk: int = 1_000,
    max_id_len: int = MAX_CLIENT_ID_LEN,
) -> int:
    """Check ``path`` (all rows good, else ``ProfileFileError``: :func:`check_profiles`),
    then read it again and write it to the Redis of ``settings`` (with its timeouts) in
    pipelines of ``chunk`` clients; return the number of profiles. Neither pass holds the
    file in memory. When Redis fails part-way, the ``ProfileError`` says how many were
    written (each chunk is one transaction, each profile replaced whole: loading again is
    safe); so does a file that changed between the passes."""
    path = Path(path)
    before = _version(path)
    total = check_profiles(path, max_id_len)
    written = 0

    def changed() -> ProfileError:
        msg = (
            f"{path}: the file changed while it was loaded ({written:,} of {total:,} profiles"
            " written): load it again once it is complete"
        )
        return ProfileError(msg)

    with connect(settings) as client:
        store = ProfileStore(client, chunk=chunk)
        batch: list[Profile] = []
        try:
            for _, item in _checked(path, max_id_len):
                if not isinstance(item, Profile) or written + len(batch) >= total:
                    raise changed()
                batch.append(item)
                if len(batch) == chunk:
                    written += store.load(batch)
                    batch = []
            if batch:
                written += store.load(batch)
        except redis.RedisError as exc:
            msg = (
                f"{path}: Redis failed after {written:,} of {total:,} profiles were"
                f" written: {exc} (each profile is replaced whole: load the file again once"
                " Redis answers)"
            )
            raise ProfileError(msg) from exc
    if written != total or _version(path) != before:
        raise changed()
    return written


def _version(path: Path) -> tuple[int, int]:
    """What tells a changed file: its size and modification time."""
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
