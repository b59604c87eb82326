"""Reading parallel text (.txt, .gz, .tsv) with one-line errors naming file and line."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import SeqattnError


def iter_lines(path: str | Path) -> Iterator[str]:
    """Yield the lines of a UTF-8 text file (gzip if it starts with the gzip magic) one at a time,
    without newlines, a leading BOM or trailing CRs; raise SeqattnError naming the file (and line)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        with (gzip.open if gz else open)(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SeqattnError(f"{path}:{n}: invalid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                                       f"{e.start + 1})") from None
                if n == 1:
                    line = line.removeprefix("\ufeff")
                yield line.removesuffix("\n").removesuffix("\r")
    except FileNotFoundError:
        raise SeqattnError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SeqattnError(f"{path}: is a directory, expected a text file") from None
    except PermissionError:
        raise SeqattnError(f"{path}: permission denied") from None
    except (OSError, EOFError, zlib.error) as e:
        raise SeqattnError(f"{path}: corrupt or truncated gzip file ({e})") from None


def read_lines(path: str | Path) -> list[str]:
    """Return the lines of a UTF-8 text file (see iter_lines); an empty or blank file is an error."""
    lines = list(iter_lines(path))
    if not any(line.strip() for line in lines):
        raise SeqattnError(f"{path}: file is empty")
    return lines


def read_parallel(src: str | Path, tgt: str | Path) -> tuple[list[str], list[str]]:
    """Return (source lines, target lines) of two line-aligned files."""
    s, t = read_lines(src), read_lines(tgt)
    if len(s) != len(t):
        raise SeqattnError(f"line counts differ: {src} has {len(s)} lines, {tgt} has {len(t)} lines")
    return s, t


def read_tsv(path: str | Path) -> tuple[list[str], list[str]]:
    """Return (source lines, target lines) of a TSV file with two columns."""
    src, tgt = [], []
    for n, line in enumerate(read_lines(path), 1):
        cols = line.split("\t")
        if len(cols) != 2:
            raise SeqattnError(f"{path}:{n}: expected 2 tab-separated columns, found {len(cols)}")
        src.append(cols[0])
        tgt.append(cols[1])
    return src, tgt


def read_split(src: str | None, tgt: str | None, tsv: str | None) -> tuple[list[str], list[str]]:
    """Return the (source, target) lines of a split given as two files or one TSV."""
    return read_tsv(tsv) if tsv else read_parallel(src, tgt)
