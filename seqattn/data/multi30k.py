"""Download the Multi30k task-1 raw files (gzip, one sentence a line) from the public repository."""

from __future__ import annotations

import gzip
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from ..errors import SeqattnError

BASE_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
SPLITS = ("train", "val", "test_2016_flickr")
LANGS = ("de", "en", "fr", "cs")
FILES = tuple(f"{split}.{lang}.gz" for split in SPLITS for lang in LANGS)


def _check_gzip(path: Path) -> int:
    """Return the number of lines of a gzip file; raise OSError/EOFError/zlib.error if it is broken."""
    lines = 0
    with gzip.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
    return lines


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Download url into dest atomically: a temporary file, checked, then renamed; never a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            expected = resp.headers.get("Content-Length")
            size = 0
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                size += len(chunk)
            if expected is not None and size != int(expected):
                raise SeqattnError(f"{url}: download truncated ({size} of {expected} bytes)")
            out.flush()
            os.fsync(out.fileno())
        try:
            _check_gzip(Path(tmp))
        except (OSError, EOFError, zlib.error) as e:
            raise SeqattnError(f"{url}: downloaded file is not a complete gzip file ({e})") from None
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise SeqattnError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise SeqattnError(f"{url}: download failed ({getattr(e, 'reason', e)})") from None
    except OSError as e:
        raise SeqattnError(f"{dest}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def download(directory: str | Path, base_url: str | None = None, files: tuple[str, ...] = FILES,
             timeout: float = 60.0) -> list[Path]:
    """Return the paths of the Multi30k files in directory, downloading those missing or broken."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SeqattnError(f"{directory}: cannot create ({e.strerror})") from None
    base = (base_url or BASE_URL).rstrip("/") + "/"
    paths = []
    for name in files:
        dest = directory / name
        try:
            ok = dest.exists() and _check_gzip(dest) > 0
        except (OSError, EOFError, zlib.error):
            ok = False
        if not ok:
            _fetch(base + name, dest, timeout)
        paths.append(dest)
    return paths
