"""Profile files (CSV with a header row, or JSON lines) and the loader behind ``ato profiles load``.

Every bad row is reported: :func:`read_profiles` collects all errors and raises
:class:`~policy.exceptions.ProfileFileError` (``errors`` = one ``file:line: field 'x': problem``
per row); a file with any bad row loads nothing.
"""

import csv
from pathlib import Path

import orjson

from ato.config import RedisSettings
from policy.connection import connect
from policy.exceptions import ProfileError, ProfileFileError
from policy.profiles import Profile, ProfileStore, parse_profile

CSV_SUFFIXES = (".csv",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def read_profiles(path: Path | str) -> list[Profile]:
    """Every profile of a ``.csv`` or ``.jsonl``/``.ndjson``/``.json`` (one object a line) file.

    Blank lines of a JSON-lines file are ignored; a client id listed twice is an error.
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


def _jsonl_rows(path: Path) -> list[tuple[int, dict[str, object] | str]]:
    rows: list[tuple[int, dict[str, object] | str]] = []
    with path.open("rb") as handle:
        for line, raw in enumerate(handle, start=1):
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


def load_profiles_file(settings: RedisSettings, path: Path | str, chunk: int = 1_000) -> int:
    """Read ``path`` (all rows valid, else ``ProfileFileError``) and write it to the Redis of
    ``settings`` (with its timeouts) in pipelines of ``chunk`` clients; return the number of
    profiles."""
    profiles = read_profiles(path)
    with connect(settings) as client:
        return ProfileStore(client, chunk=chunk).load(profiles)
