"""Byte ranges of attempt logs (core/logfiles.read_log_range): offsets, limits, tails,
UTF-8 and line boundaries, and files that do not exist yet."""

from __future__ import annotations

from pathlib import Path

from cadenza.core.logfiles import MAX_READ_BYTES, read_log_range


def test_reading_in_chunks_continues_exactly_where_the_last_ended(tmp_path: Path) -> None:
    text = "".join(f"line {i} é€😀\n" for i in range(200))
    path = tmp_path / "a.log"
    path.write_text(text, encoding="utf-8")
    got, offset, reads = "", 0, 0
    while True:
        chunk = read_log_range(str(path), offset, 7)  # cuts inside multi-byte characters
        assert "\ufffd" not in chunk.text
        got += chunk.text
        reads += 1
        if chunk.at_end:
            break
        assert chunk.next_offset > offset
        offset = chunk.next_offset
    assert got == text and reads > 100
    assert chunk.size == len(text.encode())


def test_negative_offset_reads_the_tail_and_past_the_end_reads_nothing(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    path.write_bytes(b"0123456789")
    tail = read_log_range(str(path), -4, 100)
    assert (tail.text, tail.offset, tail.next_offset) == ("6789", 6, 10)
    assert read_log_range(str(path), -100, 3).text == "012"
    past = read_log_range(str(path), 50, 10)
    assert (past.text, past.offset, past.next_offset, past.at_end) == ("", 10, 10, True)


def test_whole_lines_holds_back_a_line_being_written(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_bytes(b"done 1\ndone 2\nhalf")
    chunk = read_log_range(str(path), 0, 1000, whole_lines=True)
    assert chunk.text == "done 1\ndone 2\n" and chunk.next_offset == 14
    assert read_log_range(str(path), 14, 1000, whole_lines=True).text == ""
    assert read_log_range(str(path), 14, 1000).text == "half"
    long_line = tmp_path / "d.log"
    long_line.write_bytes(b"x" * 50)
    assert read_log_range(str(long_line), 0, 10, whole_lines=True).text == "x" * 10


def test_missing_file_reads_empty_and_limit_is_capped(tmp_path: Path) -> None:
    missing = read_log_range(str(tmp_path / "none.log"), 0, 10)
    assert missing.text == "" and not missing.exists and missing.at_end
    assert not read_log_range(None).exists
    big = tmp_path / "e.log"
    big.write_bytes(b"a" * (MAX_READ_BYTES + 10))
    chunk = read_log_range(str(big), 0, 10 * MAX_READ_BYTES)
    assert chunk.next_offset == MAX_READ_BYTES and not chunk.at_end
