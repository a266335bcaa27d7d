"""The zstd codec of Jetstream's compress=true wire, with the real shipped dictionary."""

from __future__ import annotations

import hashlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest import codec

from tests.conftest import SAMPLE_JSONL as SAMPLE  # noqa: E402 - the bundled real recording
SAMPLE_LINES = [line.rstrip(b"\n") for line in SAMPLE.open("rb")]


def test_shipped_dictionary_is_the_jetstream_one() -> None:
    raw = codec.dictionary_bytes()
    assert len(raw) == 112_640
    assert hashlib.sha256(raw).hexdigest() == "b8d77b46933aceecbdd5275a01241efc985c970c78162b8150cf67a26522f70c"
    assert codec.dictionary().dict_id() == codec.DICTIONARY_ID == 1612007021
    assert codec.dictionary() is codec.dictionary()  # loaded once


@pytest.mark.parametrize("write_content_size", [True, False])
def test_every_real_event_round_trips(write_content_size: bool) -> None:
    for line in SAMPLE_LINES:
        frame = codec.compress(line, write_content_size=write_content_size)
        assert codec.decompress(frame, max_output_size=1 << 20) == line


def test_frames_are_standalone_and_name_the_dictionary() -> None:
    frame = codec.compress(SAMPLE_LINES[0])
    params = zstandard.get_frame_parameters(frame)
    assert params.dict_id == codec.DICTIONARY_ID
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    # without the dictionary the frame is unreadable: it really depends on it
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(frame)


def test_dictionary_compresses_real_events_to_about_half() -> None:
    raw = sum(len(line) for line in SAMPLE_LINES)
    compressed = sum(len(codec.compress(line)) for line in SAMPLE_LINES)
    assert compressed < 0.6 * raw


def test_decompress_accepts_exactly_the_limit() -> None:
    line = SAMPLE_LINES[0]
    assert codec.decompress(codec.compress(line, write_content_size=False), len(line)) == line
    assert codec.decompress(codec.compress(line), len(line)) == line


@pytest.mark.parametrize("write_content_size", [True, False])
def test_decompress_refuses_output_over_the_limit(write_content_size: bool) -> None:
    line = SAMPLE_LINES[0]
    frame = codec.compress(line, write_content_size=write_content_size)
    with pytest.raises(codec.FrameTooLargeError) as caught:
        codec.decompress(frame, len(line) - 1)
    assert caught.value.max_output_size == len(line) - 1
    assert isinstance(caught.value, codec.CodecError)


def test_decompression_bomb_is_stopped_at_the_limit() -> None:
    bomb = codec.compress(b"x" * 50_000_000, write_content_size=False)
    assert len(bomb) < 10_000
    with pytest.raises(codec.FrameTooLargeError):
        codec.decompress(bomb, 1 << 20)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"not zstd at all",
        b"\x28\xb5\x2f\xfd" + b"\x00garbage after the magic",
        codec.compress(SAMPLE_LINES[1], write_content_size=False)[:-3],  # truncated
        codec.compress(SAMPLE_LINES[1])[:-3],
        codec.compress(SAMPLE_LINES[1]) + b"trailing",
    ],
    ids=["empty", "text", "bad-body", "truncated-no-size", "truncated-with-size", "trailing-bytes"],
)
def test_corrupt_frames_raise_a_clear_error(frame: bytes) -> None:
    with pytest.raises(codec.CorruptFrameError):
        codec.decompress(frame, 1 << 20)


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        codec.decompress(codec.compress(b"{}"), 0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.booleans())
def test_any_bytes_round_trip(data: bytes, write_content_size: bool) -> None:
    frame = codec.compress(data, write_content_size=write_content_size)
    assert codec.decompress(frame, max(len(data), 1)) == data
