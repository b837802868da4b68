"""Shared fixtures: every test gets its own storage root, landing folder and Dagster home."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CYBER_DATA_DIR, CYBER_LANDING_DIR and DAGSTER_HOME at a fresh temp folder."""
    monkeypatch.setenv("CYBER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CYBER_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("CYBER_MARKET_SOURCE", raising=False)
    monkeypatch.delenv("CYBER_EXCHANGE_URL", raising=False)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("CYBER_VSM_DB", raising=False)  # the VSM event log under this test's DAGSTER_HOME
    monkeypatch.delenv("CYBER_POLICY", raising=False)  # the embedded vector store unless a test names one
    return tmp_path
