"""Fetching the official archives into a cache folder, checksum verified.

Used only when a dataset is named without a directory.  The files are checked
against pinned MD5 sums (the same sums as ``shared/datasets/CHECKSUMS.md5`` for
the files whose official copies we have) before the folder is used.  With no
network the download fails at once with a message that names ``--data-dir``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .errors import DataError

GROUPLENS = "https://files.grouplens.org/datasets/"
LIGHTGCN = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/gowalla/"
KGCN = "https://raw.githubusercontent.com/hwwang55/KGCN/master/data/music/"


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: archives or single files, and pinned file checksums."""

    urls: tuple[str, ...]
    #: zip archive member prefix to strip (``ml-100k/``) when extracting
    strip: str = ""
    #: md5 of files after extraction (file name -> md5); absent files are not pinned
    md5: dict[str, str] = field(default_factory=dict)


SOURCES: dict[str, Source] = {
    "ml-100k": Source(
        (GROUPLENS + "movielens/ml-100k.zip",),
        strip="ml-100k/",
        md5={
            "u.data": "6e47046882bad158b0efbb84cd5cb987",
            "u.item": "c9e7f390115d79079537301d5204f3f7",
            "u.user": "1b53539edc13caad0282c8500608a319",
            "u.genre": "a7578bdb37758741ae9429d2c736af18",
            "u.occupation": "035abaa2165f35cebce4b91e03481e0a",
        },
    ),
    "ml-1m": Source(
        (GROUPLENS + "movielens/ml-1m.zip",),
        strip="ml-1m/",
        md5={"users.dat": "681c0711d0d4548cd3d4718a49c2dcd8", "movies.dat": "ef9fd9ff8d1b33faf73e2122c371e910"},
    ),
    "ml-latest-small": Source(
        (GROUPLENS + "movielens/ml-latest-small.zip",),
        strip="ml-latest-small/",
        md5={"movies.csv": "b252328d16b085936b56eefad880ef9d", "tags.csv": "5d095828cb668ec2fae1e2cf0d99c671"},
    ),
    "gowalla": Source(
        tuple(LIGHTGCN + f for f in ("train.txt", "test.txt", "user_list.txt", "item_list.txt")),
        md5={
            "train.txt": "47aae63bf388eb0837571673104ef5d1",
            "test.txt": "c04e2c4bcd2389f53ed8281816166149",
            "user_list.txt": "f83ec6f2cd974ba6470e8808830cc144",
            "item_list.txt": "13b1c0d75b07b8cea9413f40042f476f",
        },
    ),
    "lastfm-kg": Source(
        (
            GROUPLENS + "hetrec2011/hetrec2011-lastfm-2k.zip",
            KGCN + "kg.txt",
            KGCN + "item_index2entity_id.txt",
        ),
        md5={
            "user_artists.dat": "f1a4e4b774c63509e64c716e11c94793",
            "kg.txt": "1621fead8175dc3a69df8e595487fd81",
            "item_index2entity_id.txt": "14b9c96d980afa45de099517d3825b2a",
        },
    ),
}


def cache_root() -> Path:
    """``$WHYREC_CACHE`` or ``~/.cache/whyrec``."""
    return Path(os.environ.get("WHYREC_CACHE", Path.home() / ".cache" / "whyrec"))


def file_hash(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    return file_hash(path, "md5")


def verify(folder: Path, source: Source) -> None:
    """Raise :class:`DataError` if a pinned file is missing or its checksum differs."""
    for name, expected in source.md5.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"download incomplete: {name} missing", folder)
        got = md5sum(path)
        if got != expected:
            raise DataError(f"checksum mismatch: md5 {got}, expected {expected}", path)


def _reachable(url: str, timeout: float) -> bool:
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch(name: str, cache: Path | None = None, timeout: float = 5.0) -> Path:
    """Folder holding dataset ``name`` in its official layout, downloading it if needed."""
    if name not in SOURCES:
        raise DataError(f"no download known for dataset {name!r}; pass --data-dir")
    source = SOURCES[name]
    folder = (cache or cache_root()) / name
    marker = folder / ".verified"
    if marker.is_file():
        return folder
    if not _reachable(source.urls[0], timeout):
        raise DataError(
            f"cannot download {name}: no network connection to {urlparse(source.urls[0]).hostname}. "
            f"Pass --data-dir DIR pointing to a folder with the official {name} files"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=_ensure(folder.parent)))
    try:
        for url in source.urls:
            target = tmp / Path(urlparse(url).path).name
            try:
                with urllib.request.urlopen(url, timeout=60) as resp, open(target, "wb") as out:
                    shutil.copyfileobj(resp, out)
            except OSError as err:
                raise DataError(f"download of {url} failed ({err}); pass --data-dir DIR instead") from None
            if target.suffix == ".zip":
                _extract(target, tmp, source.strip)
                target.unlink()
        verify(tmp, source)
        (tmp / ".verified").write_text("ok\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract(archive: Path, dest: Path, strip: str) -> None:
    """Extract a zip flat into ``dest`` (dropping ``strip``), refusing unsafe member names."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                name = member.filename[len(strip):] if member.filename.startswith(strip) else member.filename
                if member.is_dir() or not name or "/" in name or name.startswith(".."):
                    continue
                with zf.open(member) as src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)
    except zipfile.BadZipFile:
        raise DataError("downloaded archive is not a valid zip file", archive) from None
