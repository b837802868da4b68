"""Parquet tables under a storage root, one namespace per source, written atomically.

The root is a local folder (default) or an fsspec URL such as ``s3://bucket/prefix`` (universal-pathlib
and s3fs; credentials and endpoint from the usual AWS variables, e.g. ``AWS_ENDPOINT_URL_S3`` for an
S3-compatible server). How a publish stays atomic:

- locally, a file is written to a hidden temp file beside its target and renamed over it;
- on object storage there is no rename, but one object is replaced atomically: a reader sees the previous
  object or the new one, never part of it. A table is therefore serialised in full first (a local temp
  file) and published with one whole-object write (``put_object``: a single PUT; s3fs switches to a
  multipart upload above 100 MB, which also becomes visible only when it completes). A failure before or
  during that write leaves the previous object as it was, and no temp object is ever created. Objects are
  read with one whole-object GET (``get_object``), so a read never mixes two versions either.

A publish of several objects writes the data objects first and its pointer or manifest last.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeGuard

import polars as pl

if TYPE_CHECKING:  # imported when a URL is first used: local runs do not pay for fsspec
    from upath import UPath

MARKET_SOURCES = ("synthetic", "ccxt", "landing")
GITHUB_SOURCES = ("synthetic", "github")


def content_hash(df: pl.DataFrame) -> str:
    """A stable hash of a frame's schema and values (independent of Parquet encoding details)."""
    digest = hashlib.sha256()
    for name, dtype in df.schema.items():
        digest.update(f"{name}:{dtype}\n".encode())
    for series in df.get_columns():
        if series.dtype == pl.String:
            digest.update("\x1f".join(series.fill_null("\x00").to_list()).encode())
        else:
            digest.update(series.to_physical().fill_null(0).to_numpy().tobytes())
        digest.update(series.is_null().to_numpy().tobytes())
    return digest.hexdigest()[:24]


StoragePath: TypeAlias = "Path | UPath"
"""A local folder or file (``Path``) or an object-storage URL (``UPath``)."""

_LOCAL_PROTOCOLS = ("", "file", "local")


def is_url(root: object) -> bool:
    """Whether ``root`` is an fsspec URL of remote storage (``s3://...``; ``file://`` is local)."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


def is_remote(path: object) -> TypeGuard[UPath]:
    """Whether ``path`` lives on object storage (a ``UPath`` of a non-local protocol)."""
    upath = sys.modules.get("upath")  # not imported yet: no UPath exists
    return upath is not None and isinstance(path, upath.UPath) and path.protocol not in _LOCAL_PROTOCOLS


def as_path(root: str | os.PathLike[str] | UPath) -> StoragePath:
    """A ``Path`` for a local folder (or a ``file://`` URL), a ``UPath`` for an fsspec URL.

    Remote paths are opened without fsspec's listing cache: a long-lived process (the sensor daemon) must
    see objects that others wrote since its last look."""
    if is_remote(root):
        return root
    if isinstance(root, Path):
        return root
    if not isinstance(root, str | os.PathLike):  # a local UPath (file://)
        return Path(root.path)
    text = os.fspath(root)
    if is_url(text):
        from upath import UPath

        return UPath(text, use_listings_cache=False)
    return Path(text.removeprefix("file://"))


def local_path(path: StoragePath) -> Path:
    """``path`` as a local ``Path``; ``ValueError`` for a path on object storage."""
    if isinstance(path, Path):
        return path
    if is_remote(path):
        raise ValueError(f"{path} is on object storage; a local folder is needed here")
    if isinstance(path, str | os.PathLike):
        return Path(path)
    return Path(path.path)  # a local UPath (file://)


def put_object(path: UPath, data: bytes) -> None:
    """Publish ``data`` as the whole object ``path`` in one write (readers see the old or the new object)."""
    path.fs.pipe_file(path.path, data)


def get_object(path: UPath) -> bytes:
    """The whole object ``path`` in one read (one version of it, never a mix of two)."""
    return path.fs.cat_file(path.path)


def write_atomic(path: StoragePath, write: Callable[[str], object]) -> StoragePath:
    """Call ``write(temp_path)`` for a temp file beside ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failed write leaves the previous version. On object
    storage the temp file is local and its finished bytes are published with one ``put_object``.
    """
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="cyber-put-") as folder:
            tmp = os.path.join(folder, path.name)
            write(tmp)
            put_object(path, Path(tmp).read_bytes())
        return path
    path = local_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(text: str, path: StoragePath) -> StoragePath:
    if is_remote(path):
        put_object(path, text.encode())
        return path
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_parquet_atomic(df: pl.DataFrame, path: StoragePath) -> StoragePath:
    return write_atomic(path, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


def read_parquet(path: StoragePath) -> pl.DataFrame:
    """One stored Parquet file or object (an object is read whole, in one GET)."""
    if is_remote(path):
        return pl.read_parquet(get_object(path))
    return pl.read_parquet(local_path(path))


def scan_parquet(paths: Sequence[StoragePath]) -> pl.LazyFrame:
    """Lazily scan Parquet files; objects are fetched whole (one GET each) and scanned from memory."""
    if any(is_remote(p) for p in paths):
        return pl.scan_parquet([get_object(p) if is_remote(p) else local_path(p).read_bytes() for p in paths])
    return pl.scan_parquet([local_path(p) for p in paths])


class TableStore:
    """Layout: ``<root>/<source>/<table>/<partition parts...>.parquet``; the root is a local folder or an
    object-storage URL (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | UPath) -> None:
        self.root: StoragePath = as_path(root)

    def path(self, source: str, table: str, *parts: str) -> StoragePath:
        for part in (source, table, *parts):
            if not part or "/" in part or "\\" in part or part.startswith("."):
                raise ValueError(f"unsafe path part {part!r}")
        *dirs, leaf = parts
        return self.root.joinpath(source, table, *dirs, f"{leaf}.parquet")

    def write(self, df: pl.DataFrame, source: str, table: str, *parts: str) -> StoragePath:
        path = self.path(source, table, *parts)
        write_parquet_atomic(df, path)
        return path

    def read(self, source: str, table: str, *parts: str) -> pl.DataFrame:
        path = self.path(source, table, *parts)
        if not path.exists():
            raise FileNotFoundError(f"no stored {table} for source {source!r} at {'/'.join(parts)} ({path})")
        return read_parquet(path)

    def publish_days(
        self,
        new_days: dict[date, pl.DataFrame],
        source: str,
        table: str,
        *parts: str,
    ) -> tuple[pl.DataFrame, StoragePath]:
        """Replace the given days inside one stored partition file (a month), keeping every other day.

        The rows of ``new_days`` (audited, passed) replace those days' stored rows; rows of other days
        (not fetched, or blocked by a failed check) keep their previous version. One atomic write.
        """
        path = self.path(source, table, *parts)
        frames = list(new_days.values())
        if path.exists():
            old = read_parquet(path)
            frames.insert(0, old.filter(~pl.col("timestamp").dt.date().is_in(list(new_days))))
        published = pl.concat(frames).sort("timestamp")
        write_parquet_atomic(published, path)
        return published, path

    def read_days(self, source: str, table: str, *dirs: str, days: list[date]) -> pl.DataFrame:
        """The stored rows of ``days`` under ``<source>/<table>/<dirs...>`` (any file layout)."""
        wanted = sorted(set(days))
        return (
            self.scan(source, table, *dirs)
            .filter(pl.col("timestamp").dt.date().is_in(wanted))
            .collect()
            .sort("timestamp")
        )

    def exists(self, source: str, table: str, *parts: str) -> bool:
        return self.path(source, table, *parts).exists()

    def scan(self, source: str, table: str, *dirs: str) -> pl.LazyFrame:
        """Lazily scan every partition file under ``<source>/<table>/<dirs...>``."""
        folder = self.root.joinpath(source, table, *dirs)
        files = sorted(p for p in folder.rglob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise FileNotFoundError(f"no stored {table} for source {source!r} under {folder}")
        return scan_parquet(files)
