"""Profile files: CSV and JSON lines, every bad row reported with file, line and field."""

import os
import socket
import time
import tracemalloc
from pathlib import Path

import pytest
import redis

from ato.config import RedisSettings
from policy import profile_files
from policy.exceptions import ProfileError, ProfileFileError
from policy.profile_files import check_profiles, load_profiles_file, read_profiles
from policy.profiles import Profile, ProfileStore

CSV = """client_id,segment,value_tier,rm_id,preferred_channel,tz,do_not_contact
C1,senior,gold,RM7,phone,Europe/London,false
C2,executive,private,,,,1

C3,car_owner,,,,Asia/Shanghai,
"""


def test_csv_reads_every_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(CSV)
    got = read_profiles(path)
    assert got == [
        Profile("C1", "senior", "gold", "RM7", "phone", "Europe/London", False),
        Profile("C2", "executive", "private", "", "", "Asia/Shanghai", True),
        Profile("C3", "car_owner"),
    ]


def test_csv_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "client_id,segment,tz\n"
        "C1,senior,Europe/London\n"
        "C2,pirates,Europe/London\n"
        "C3,senior,Mars/Base\n"
        "C1,senior,Asia/Shanghai\n"
        "C4,senior\n"
    )
    with pytest.raises(ProfileFileError) as caught:
        read_profiles(path)
    assert caught.value.errors == [
        f"{path}:3: field 'segment': 'pirates' is not one of " + _segments(),
        f"{path}:4: field 'tz': unknown IANA time zone 'Mars/Base'",
        f"{path}:5: field 'client_id': 'C1' already on line 2",
        f"{path}:6: expected 3 columns, got 2",
    ]
    assert "4 bad row(s), nothing loaded" in str(caught.value)


def test_csv_unknown_column_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "typo.csv"
    path.write_text("client_id,segmnet\nC1,senior\n")
    with pytest.raises(ProfileFileError, match=r"typo.csv:1: header: unknown column 'segmnet'"):
        read_profiles(path)


def test_jsonl_reads_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"client_id": "C1", "segment": "senior", "do_not_contact": true}\n'
        "\n"
        '{"client_id": "C2", "segment": "senior", "value_tier": 3}\n'
        "not json\n"
        '["C4"]\n'
        '{"client_id": "C5", "segment": "young_trendsetter", "tz": "America/New_York"}\n'
    )
    with pytest.raises(ProfileFileError) as caught:
        read_profiles(path)
    errors = caught.value.errors
    assert len(errors) == 3
    assert errors[0] == f"{path}:3: field 'value_tier': expected a string, got 3"
    assert errors[1].startswith(f"{path}:4: not JSON")
    assert errors[2] == f"{path}:5: expected a JSON object, got list"


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "p.xlsx"
    path.write_text("")
    with pytest.raises(ProfileError, match=r"p.xlsx: unknown profile file type"):
        read_profiles(path)


def test_load_profiles_file_writes_redis(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    path = tmp_path / "p.jsonl"
    rows = [f'{{"client_id": "J{i}", "segment": "senior", "rm_id": "RM{i}"}}' for i in range(2_345)]
    path.write_text("\n".join(rows) + "\n")
    assert load_profiles_file(RedisSettings(url=redis_url), path) == 2_345
    got = ProfileStore(r).get_many(["J0", "J2344", "J9999"])
    assert got["J2344"] == Profile("J2344", "senior", rm_id="RM2344")
    assert not got["J9999"].known


def test_a_bad_file_loads_nothing(tmp_path: Path, redis_url: str, r: redis.Redis) -> None:
    path = tmp_path / "p.csv"
    path.write_text("client_id,segment\nC1,senior\nC2,nobody\n")
    with pytest.raises(ProfileFileError):
        load_profiles_file(RedisSettings(url=redis_url), path)
    assert r.dbsize() == 0


def _segments() -> str:
    from ato.catalog import SEGMENTS

    return ", ".join(SEGMENTS)


def test_csv_header_problems_and_a_byte_order_mark(tmp_path: Path) -> None:
    """A column named twice is an error (its values overwrote each other, silently); an
    unreadable field is a row error, not a traceback; a spreadsheet's byte-order mark is
    not part of the first column's name."""
    path = tmp_path / "p.csv"
    path.write_text("client_id,segment,segment\nD1,senior,executive\n")
    with pytest.raises(ProfileFileError) as twice:
        read_profiles(path)
    assert twice.value.errors == [f"{path}:1: header: column(s) 'segment' given twice"]
    path.write_text("client_id,segment\nD1,senior\nD2," + "x" * 200_000 + "\n")
    with pytest.raises(ProfileFileError) as big:
        read_profiles(path)
    assert len(big.value.errors) == 1 and "not readable as CSV: field larger" in big.value.errors[0]
    path.write_bytes("client_id,segment\nD1,senior\n".encode("utf-8-sig"))
    assert [p.client_id for p in read_profiles(path)] == ["D1"]


def test_loading_into_a_redis_that_never_answers_takes_the_settings_timeout(
    tmp_path: Path,
) -> None:
    """`ato profiles load` honours `redis.timeout_s`, as every other Redis call does."""
    path = tmp_path / "p.csv"
    path.write_text("client_id,segment\nD1,senior\n")
    with socket.socket() as sock:  # accepts connections (backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        settings = RedisSettings(url=f"redis://127.0.0.1:{sock.getsockname()[1]}/0", timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(ProfileError, match="Redis failed after 0 of 1 profiles") as caught:
            load_profiles_file(settings, path)
        assert isinstance(caught.value.__cause__, redis.TimeoutError)
        assert time.monotonic() - started < 3


def test_a_client_id_no_event_can_carry_is_a_bad_row(tmp_path: Path) -> None:
    """The decode step refuses control characters in client ids, so a profile under such an
    id could never be looked up (they loaded silently before)."""
    path = tmp_path / "p.jsonl"
    rows = ['{"client_id": "A\\u0000B", "segment": "senior"}',
            '{"client_id": "C\\nD", "segment": "senior"}',
            '{"client_id": "E\\u009bF", "segment": "senior"}',
            '{"client_id": " \\ufeff", "segment": "senior"}',
            '{"client_id": "ok", "segment": "senior"}']  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ProfileFileError) as bad:
        read_profiles(path)
    lines = [f"{path}:{i}" for i in (1, 2, 3, 4)]
    assert [e.split(": ", 1)[0] for e in bad.value.errors] == lines
    assert all("control character" in e for e in bad.value.errors[:3])
    assert "only white space" in bad.value.errors[3]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("clientid,segment", "unknown column 'clientid'"),
        ("client_id,segment,", "unknown column ''"),
        ("client_id;segment", "unknown column 'client_id;segment'"),
        ("client_id,tz", "column 'segment' is required"),
    ],
)
def test_a_bad_csv_header_is_one_error_not_one_per_row(
    tmp_path: Path, header: str, message: str
) -> None:
    path = tmp_path / "p.csv"
    path.write_text(header + "\n" + "".join(f"C{i},senior\n" for i in range(500)))
    with pytest.raises(ProfileFileError, match=message) as caught:
        read_profiles(path)
    assert len(caught.value.errors) == 1


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl"])
def test_a_file_without_profiles_is_an_error(tmp_path: Path, name: str) -> None:
    """Empty CSV and JSON-lines files alike (the JSON-lines one loaded 0 profiles, exit 0)."""
    path = tmp_path / name
    path.write_text("client_id,segment\n" if name.endswith(".csv") else "\n")
    with pytest.raises(ProfileError, match="no profiles in the file"):
        read_profiles(path)


def test_json_lines_may_start_with_a_byte_order_mark_and_null_means_the_default(
    tmp_path: Path,
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"client_id": "C1", "segment": "senior", "do_not_contact": null}\n'
    )
    assert read_profiles(path) == [Profile("C1", "senior")]


def test_a_client_id_longer_than_events_may_carry_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"client_id,segment\n{'C' * 64},senior\n{'D' * 65},senior\n")
    with pytest.raises(ProfileFileError, match=r"p.csv:3: field 'client_id': longer than 64"):
        read_profiles(path)
    assert len(read_profiles(path, max_id_len=65)) == 2


def test_ids_with_equal_hashes_are_told_apart_from_ids_listed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids listed twice are found by their hashes, then by the ids themselves: with every
    hash the same, distinct ids are still no error, and a repeated one still is."""
    monkeypatch.setattr(profile_files, "hash", lambda _text: 7, raising=False)
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"client_id": "{c}", "segment": "senior"}}\n' for c in "ABCDB"))
    with pytest.raises(ProfileFileError) as caught:
        check_profiles(path)
    assert caught.value.errors == [f"{path}:5: field 'client_id': 'B' already on line 2"]
    path.write_text("".join(f'{{"client_id": "{c}", "segment": "senior"}}\n' for c in "ABCD"))
    assert check_profiles(path) == 4


def test_very_many_bad_rows_are_counted_and_the_first_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(profile_files, "KEPT_ERRORS", 3)
    path = tmp_path / "p.jsonl"
    rows = ['{"client_id": "D0", "segment": "senior"}']
    rows += [f'{{"client_id": "D{i}", "segment": "nobody"}}' for i in range(1, 9)]
    rows += ['{"client_id": "D0", "segment": "senior"}']  # listed twice: counted too
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(ProfileFileError) as caught:
        check_profiles(path)
    assert caught.value.count == 9
    assert [e.split(":")[1] for e in caught.value.errors] == ["2", "3", "4"]
    assert "9 bad row(s), nothing loaded" in str(caught.value)


def test_checking_a_file_holds_little_of_it_in_memory(tmp_path: Path) -> None:
    """200,000 profiles: a peak of about 3.5 MB (16 bytes a profile at most, to find repeated ids),
    where reading them into a list took 140 MB."""
    path = tmp_path / "p.jsonl"
    with path.open("w") as out:
        for i in range(200_000):
            out.write(f'{{"client_id": "C{i:09d}", "segment": "senior", "rm_id": "RM{i}"}}\n')
    tracemalloc.start()
    try:
        assert check_profiles(path) == 200_000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_a_file_that_changes_while_it_loads_is_an_error(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked, then read again to be written: rows added in between are not loaded
    unchecked; the error says how many were written."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"client_id": "E1", "segment": "senior"}\n')
    checked = profile_files.check_profiles

    def check_then_append(p: Path | str, max_id_len: int) -> int:
        count = checked(p, max_id_len)
        with Path(p).open("a") as out:
            out.write('{"client_id": "E2", "segment": "nobody"}\n')
        return count

    monkeypatch.setattr(profile_files, "check_profiles", check_then_append)
    with pytest.raises(ProfileError, match=r"changed while it was loaded \(0 of 1 profiles"):
        load_profiles_file(RedisSettings(url=redis_url), path)


def test_a_file_that_is_not_regular_is_refused(tmp_path: Path) -> None:
    """A named pipe cannot be read twice (checked, then loaded): the second read hung."""
    pipe = tmp_path / "p.csv"
    os.mkfifo(pipe)
    with pytest.raises(ProfileError, match="not a regular file"):
        check_profiles(pipe)
