"""Parquet tables under a storage root, one namespace per source, written atomically."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl

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


def write_atomic(path: Path, write: Callable[[str], object]) -> Path:
    """Call ``write(temp_path)`` for a temp file beside ``path``, then rename it over ``path``.

    A reader never sees a half-written file, and a failed write leaves the previous version.
    """
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


def write_text_atomic(text: str, path: Path) -> Path:
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


class TableStore:
    """Layout: ``<root>/<source>/<table>/<partition parts...>.parquet``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, source: str, table: str, *parts: str) -> Path:
        for part in (source, table, *parts):
            if not part or "/" in part or "\\" in part or part.startswith("."):
                raise ValueError(f"unsafe path part {part!r}")
        *dirs, leaf = parts
        return self.root.joinpath(source, table, *dirs, f"{leaf}.parquet")

    def write(self, df: pl.DataFrame, source: str, table: str, *parts: str) -> Path:
        path = self.path(source, table, *parts)
        write_parquet_atomic(df, path)
        return path

    def read(self, source: str, table: str, *parts: str) -> pl.DataFrame:
        path = self.path(source, table, *parts)
        if not path.exists():
            raise FileNotFoundError(f"no stored {table} for source {source!r} at {'/'.join(parts)} ({path})")
        return pl.read_parquet(path)

    def publish_days(
        self,
        new_days: dict[date, pl.DataFrame],
        source: str,
        table: str,
        *parts: str,
    ) -> tuple[pl.DataFrame, Path]:
        """Replace the given days inside one stored partition file (a month), keeping every other day.

        The rows of ``new_days`` (audited, passed) replace those days' stored rows; rows of other days
        (not fetched, or blocked by a failed check) keep their previous version. One atomic write.
        """
        path = self.path(source, table, *parts)
        frames = list(new_days.values())
        if path.exists():
            old = pl.read_parquet(path)
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
        return pl.scan_parquet(files)
