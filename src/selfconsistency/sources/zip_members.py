"""One member of a zip archive, decompressed whatever its method: stored, deflate (zipfile) or zstd (zip
method 93, which inspect_ai's .eval logs use and Python's zipfile reads only from 3.14: `zstandard`).
Bounded in size, CRC checked; `SourceError` names the archive and member."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

from .base import SourceError

MAX_MEMBER_BYTES = 512 * 1024**2  # one decompressed member
_ZSTD = 93


def read_member(path: Path, data: bytes, info: zipfile.ZipInfo) -> bytes:
    """A member's bytes, decompressed (stored, deflate or zstd), its size bounded and its CRC checked."""
    where = f"{path}:{info.filename}"
    if info.file_size > MAX_MEMBER_BYTES:
        raise SourceError(f"{where}: {info.file_size:,} bytes, more than {MAX_MEMBER_BYTES:,}")
    if info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        try:
            with zipfile.ZipFile(io.BytesIO(data)).open(info) as member:
                content = member.read(MAX_MEMBER_BYTES + 1)
        except (zipfile.BadZipFile, zlib.error, OSError) as exc:
            raise SourceError(f"{where}: corrupt ({exc})") from None
    elif info.compress_type == _ZSTD:
        content = _zstd(where, data, info)
    else:
        raise SourceError(f"{where}: compressed with zip method {info.compress_type}, which this import does not "
                          "read (inspect_ai writes zstd, 93)")
    if len(content) > MAX_MEMBER_BYTES or zlib.crc32(content) != info.CRC:
        raise SourceError(f"{where}: corrupt (its size or CRC is not the archive's)")
    return content


def _zstd(where: str, data: bytes, info: zipfile.ZipInfo) -> bytes:
    try:
        import zstandard
    except ImportError:  # a dependency of the package: only a broken install lacks it
        raise SourceError(f"{where}: zstd-compressed and the zstandard package is missing "
                          "(pip install zstandard)") from None
    offset = info.header_offset
    signature, *_, name_length, extra_length = struct.unpack("<IHHHHHIIIHH", data[offset: offset + 30])
    if signature != 0x04034B50:
        raise SourceError(f"{where}: corrupt (no local file header)")
    start = offset + 30 + name_length + extra_length
    compressed = data[start: start + info.compress_size]
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed), read_across_frames=True)
        return reader.read(MAX_MEMBER_BYTES + 1)
    except zstandard.ZstdError as exc:
        raise SourceError(f"{where}: corrupt zstd data ({exc})") from None
