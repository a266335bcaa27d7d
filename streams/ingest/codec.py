"""The zstd codec of Jetstream's ``compress=true`` wire.

Each binary frame the service sends is one standalone zstd frame compressed with a shared
dictionary (dictionary id 1612007021, shipped as ``streams/data/zstd_dictionary``). Frames
may lack a content size in their header, and a header that has one can lie, so
:func:`decompress` always takes an explicit maximum output size and enforces it itself.

The compression contexts are per thread (zstd contexts are not thread-safe); within one
thread the functions are cheap to call per event (a few microseconds).
"""

from __future__ import annotations

import functools
import importlib.resources
import threading

import zstandard

__all__ = [
    "DICTIONARY_ID",
    "DEFAULT_LEVEL",
    "CodecError",
    "CorruptFrameError",
    "FrameTooLargeError",
    "compress",
    "decompress",
    "dictionary",
    "dictionary_bytes",
]

DICTIONARY_ID = 1612007021
"""The id stamped in the dictionary and in every frame the real service sends."""

DEFAULT_LEVEL = 3
"""zstd level 3, the default of the Go encoder the real service uses."""


class CodecError(ValueError):
    """A frame could not be turned back into event bytes."""


class CorruptFrameError(CodecError):
    """The frame is not a valid zstd frame made with the Jetstream dictionary."""


class FrameTooLargeError(CodecError):
    """The frame decompresses (or declares it decompresses) to more than the allowed size."""

    def __init__(self, size: int | None, max_output_size: int) -> None:
        self.size = size
        self.max_output_size = max_output_size
        shown = "more" if size is None else f"{size} bytes"
        super().__init__(f"zstd frame decompresses to {shown} than the {max_output_size}-byte limit")


@functools.cache
def dictionary_bytes() -> bytes:
    """The raw dictionary shipped in the package (read once)."""
    resource = importlib.resources.files("streams").joinpath("data", "zstd_dictionary")
    return resource.read_bytes()


@functools.cache
def dictionary() -> zstandard.ZstdCompressionDict:
    """The loaded dictionary; raises :class:`CodecError` if it is not the Jetstream one."""
    loaded = zstandard.ZstdCompressionDict(dictionary_bytes(), dict_type=zstandard.DICT_TYPE_FULLDICT)
    if loaded.dict_id() != DICTIONARY_ID:
        raise CodecError(f"shipped zstd dictionary has id {loaded.dict_id()}, expected {DICTIONARY_ID}")
    loaded.precompute_compress(level=DEFAULT_LEVEL)
    return loaded


class _Contexts(threading.local):
    compressor: zstandard.ZstdCompressor | None = None
    compressor_no_size: zstandard.ZstdCompressor | None = None
    decompressor: zstandard.ZstdDecompressor | None = None


_contexts = _Contexts()


def _compressor(write_content_size: bool) -> zstandard.ZstdCompressor:
    if write_content_size:
        if _contexts.compressor is None:
            _contexts.compressor = zstandard.ZstdCompressor(level=DEFAULT_LEVEL, dict_data=dictionary())
        return _contexts.compressor
    if _contexts.compressor_no_size is None:
        _contexts.compressor_no_size = zstandard.ZstdCompressor(
            level=DEFAULT_LEVEL, dict_data=dictionary(), write_content_size=False
        )
    return _contexts.compressor_no_size


def _decompressor() -> zstandard.ZstdDecompressor:
    if _contexts.decompressor is None:
        _contexts.decompressor = zstandard.ZstdDecompressor(dict_data=dictionary())
    return _contexts.decompressor


def compress(event_bytes: bytes, *, write_content_size: bool = True) -> bytes:
    """Compress one event into one standalone zstd frame made with the Jetstream dictionary.

    ``write_content_size=False`` leaves the content size out of the frame header, which the
    wire allows; clients must cope with both.
    """
    return _compressor(write_content_size).compress(event_bytes)


def decompress(frame: bytes, max_output_size: int) -> bytes:
    """Decompress one standalone zstd frame made with the Jetstream dictionary.

    Never returns more than ``max_output_size`` bytes: a frame that declares or produces more
    raises :class:`FrameTooLargeError`. Anything that is not exactly one valid frame (bad
    magic, corrupt data, another dictionary, trailing bytes) raises :class:`CorruptFrameError`.
    """
    if max_output_size <= 0:
        raise ValueError("max_output_size must be positive")
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as exc:
        raise CorruptFrameError(f"not a zstd frame: {exc}") from exc
    if declared > max_output_size:
        raise FrameTooLargeError(declared, max_output_size)
    try:
        return _decompressor().decompress(frame, max_output_size=max_output_size, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        if declared < 0 and _exceeds(frame, max_output_size):
            raise FrameTooLargeError(None, max_output_size) from exc
        raise CorruptFrameError(f"invalid zstd frame: {exc}") from exc


def _exceeds(frame: bytes, max_output_size: int) -> bool:
    """Whether a frame without a content size really produces more than the limit.

    zstd reports a truncated frame and an over-long one the same way; a bounded streaming
    read tells them apart (only on the error path, so the hot path stays one call).
    """
    try:
        reader = _decompressor().stream_reader(frame, read_across_frames=False)
        return len(reader.read(max_output_size + 1)) > max_output_size
    except zstandard.ZstdError:
        return False
