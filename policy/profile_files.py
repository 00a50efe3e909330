"""Profile files (CSV with a header row, or JSON lines) and the loader behind ``ato profiles load``.

Every bad row is reported: :func:`read_profiles` collects all errors and raises
:class:`~policy.exceptions.ProfileFileError` (``errors`` = one ``file:line: field 'x': problem``
per row); a file with any bad row loads nothing. A CSV header naming unknown columns, or
lacking ``client_id`` or ``segment``, is one error for the whole file.
"""

import csv
from pathlib import Path

import orjson
import redis

from ato.config import EngineSettings, RedisSettings
from policy.connection import connect
from policy.exceptions import ProfileError, ProfileFileError
from policy.profiles import FIELDS, Profile, ProfileStore, parse_profile

MAX_CLIENT_ID_LEN = EngineSettings().max_client_id_len

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def read_profiles(path: Path | str, max_id_len: int = MAX_CLIENT_ID_LEN) -> list[Profile]:
    """Every profile of a ``.csv`` or ``.jsonl``/``.ndjson``/``.json`` (one object a line) file.

    Blank lines of a JSON-lines file are ignored; a client id listed twice, or longer than
    ``max_id_len`` (``engine.max_client_id_len``: events with longer ids are dead letters), is
    an error, and so is a file with no profile at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        rows = _csv_rows(path)
    elif suffix in JSONL_SUFFIXES:
        rows = _jsonl_rows(path)
    else:
        msg = f"{path}: unknown profile file type {suffix!r} (use .csv or .jsonl)"
        raise ProfileError(msg)
    profiles: list[Profile] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            errors.append(f"{path}:{line}: {row}")
            continue
        try:
            profile = parse_profile(row)
        except ProfileError as exc:
            errors.append(f"{path}:{line}: {exc}")
            continue
        if len(profile.client_id) > max_id_len:
            errors.append(
                f"{path}:{line}: field 'client_id': longer than {max_id_len} characters"
                " (engine.max_client_id_len: events with such ids are dead letters)"
            )
            continue
        if profile.client_id in first_line:
            errors.append(
                f"{path}:{line}: field 'client_id': {profile.client_id!r} "
                f"already on line {first_line[profile.client_id]}"
            )
            continue
        first_line[profile.client_id] = line
        profiles.append(profile)
    if errors:
        raise ProfileFileError(str(path), errors)
    if not profiles:
        msg = f"{path}: no profiles in the file"
        raise ProfileError(msg)
    return profiles


def _csv_rows(path: Path) -> list[tuple[int, dict[str, object] | str]]:
    """(line number, row or problem); line numbers count the header as line 1."""
    rows: list[tuple[int, dict[str, object] | str]] = []
    # utf-8-sig: spreadsheets' "CSV UTF-8" starts with a byte-order mark
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                return [(1, "field 'client_id': the header row is missing (empty file)")]
            names = [h.strip() for h in header]
            twice = sorted({name for name in names if names.count(name) > 1})
            if twice:
                return [(1, f"header: column(s) {', '.join(map(repr, twice))} given twice")]
            problem = _header_problem(names)
            if problem:
                return [(1, f"header: {problem}")]
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(names):
                    rows.append((line, f"expected {len(names)} columns, got {len(row)}"))
                    continue
                rows.append((line, dict(zip(names, row, strict=True))))
        except csv.Error as exc:  # a field over csv's size limit, say: the rest is unreadable
            rows.append((reader.line_num, f"not readable as CSV: {exc}"))
    return rows


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


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, object] | str]]:
    rows: list[tuple[int, dict[str, object] | str]] = []
    with path.open("rb") as handle:
        for line, text in enumerate(handle, start=1):
            raw = text.removeprefix(b"\xef\xbb\xbf") if line == 1 else text  # as in CSV files
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                rows.append((line, f"not JSON: {exc}"))
                continue
            if not isinstance(doc, dict):
                rows.append((line, f"expected a JSON object, got {type(doc).__name__}"))
                continue
            rows.append((line, doc))
    return rows


def load_profiles_file(
    settings: RedisSettings,
    path: Path | str,
    chunk: int = 1_000,
    max_id_len: int = MAX_CLIENT_ID_LEN,
) -> int:
    """Read ``path`` (all rows valid, else ``ProfileFileError``) and write it to the Redis of
    ``settings`` (with its timeouts) in pipelines of ``chunk`` clients; return the number of
    profiles. When Redis fails part-way, the ``ProfileError`` says how many were written
    (each chunk is one transaction, each profile replaced whole: loading again is safe)."""
    profiles = read_profiles(path, max_id_len)
    written = 0
    with connect(settings) as client:
        store = ProfileStore(client, chunk=chunk)
        try:
            for start in range(0, len(profiles), chunk):
                written += store.load(profiles[start : start + chunk])
        except redis.RedisError as exc:
            msg = (
                f"{path}: Redis failed after {written:,} of {len(profiles):,} profiles were"
                f" written: {exc} (each profile is replaced whole: load the file again once"
                " Redis answers)"
            )
            raise ProfileError(msg) from exc
    return written
