"""The landing folder: files that people drop become staged tables, bad files go to quarantine.

One idea per module (import from the module; the intake names are also found here, lazily):

- ``layout``: the folder's sub-folders and the names that are never taken as drops
- ``files``: reading a dropped file's bytes safely (names, sizes, encodings) and ``LandingError``
- ``pairs``: the trading pair and candle interval from a file's name or pair column
- ``ohlcv``: parsing a market file into hourly candles
- ``moves``: quarantine and archive, without ever losing the file
- ``staging``: staged Parquet with a sequence per staged file; reading staged candles back
- ``listing``: what the sensor sees: entries, their identity, when a file is stable
- ``intake``: parse, quarantine, stage and archive files (the intake run and the CLI call it)
- ``objects``: the same on object storage (``s3://bucket/inbox``): listing, reading, copy + delete moves

Moat files are parsed and staged by ``cyber_pipelines.moat.files`` and ``cyber_pipelines.moat.staging``
with the same rules. The drop convention is in the README ("Landing folder").
"""

from typing import Any

_INTAKE_NAMES = frozenset(
    {"process_landing", "intake_files", "discard_pending", "IntakeReport", "StagedFile", "Listed"}
)


def __getattr__(name: str) -> Any:
    """``from cyber_pipelines.landing import process_landing`` works, imported lazily: the intake imports
    the moat parser, which imports ``landing.files``, so an eager import here would be a cycle."""
    if name in _INTAKE_NAMES:
        from cyber_pipelines.landing import intake

        return getattr(intake, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
