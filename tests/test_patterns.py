"""The pattern layer's domain code: windows, encoder, model store, analog forecasts without look-ahead, skill,
the planted motif found by its own earlier occurrences, and the analog strategy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cyber_pipelines.backtest.strategies import ANALOG_COLUMN, AnalogKnn
from cyber_pipelines.models.store import ModelStore
from cyber_pipelines.patterns.analog import base_rate, exact_forecasts, store_forecasts
from cyber_pipelines.patterns.encoder import (
    EncoderSettings,
    embed,
    encoder_tensors,
    load_encoder,
    pca_basis,
    pca_embed,
    train_encoder,
    unit_rows,
)
from cyber_pipelines.patterns.memory import window_points
from cyber_pipelines.patterns.search import query_row, similar
from cyber_pipelines.patterns.skill import ic_gain_test, skill
from cyber_pipelines.patterns.store import ClientVectorStore, EdgeVectorStore, VectorStore
from cyber_pipelines.patterns.windows import BAR, build_windows, epoch_seconds, window_dim, window_matrix
from cyber_pipelines.synthetic.market import motif_hours, simulate_ohlcv

ORIGIN = date(2024, 1, 1)
FAST = EncoderSettings(epochs=3, seed=5)


def candles(pair: str, days: int, seed: int = 11, **motif: float) -> pl.DataFrame:
    end = ORIGIN + timedelta(days=days - 1)
    return simulate_ohlcv(pair, ORIGIN, end, seed=seed, effect_size=0.0, lag_hours=0, origin=ORIGIN, **motif)


@pytest.fixture(params=["edge", "client"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    made: VectorStore = EdgeVectorStore(tmp_path / "edge", 8) if request.param == "edge" else ClientVectorStore(8)
    with made:
        yield made


# -- windows ---------------------------------------------------------------------------------------
def test_windows_are_normalized_and_carry_their_outcomes() -> None:
    bars = candles("BTC/USD", 10)
    w = build_windows(bars, "BTC/USD", length=24)
    assert w.height == bars.height - 24 and window_matrix(w).shape == (w.height, window_dim(24))
    x = window_matrix(w)
    returns = x[:, :24]
    assert np.allclose(returns.std(axis=1), 1.0, atol=1e-4)  # the shape, not the scale
    close = bars["close"].to_numpy()
    row = 100
    t = bars["timestamp"].to_list().index(w["timestamp"][row])
    assert w["fwd_6h"][row] == pytest.approx(np.log(close[t + 6] / close[t]))
    assert w["horizon_end"][row] == w["timestamp"][row] + 25 * BAR
    assert w["fwd_24h"].null_count() == 24 and w["fwd_1h"].null_count() == 1


def test_a_gap_in_the_candles_makes_no_window_across_it() -> None:
    bars = candles("ETH/USD", 6)
    gapped = pl.concat([bars.head(60), bars.slice(61)])  # one hour missing
    w = build_windows(gapped, "ETH/USD", length=24)
    missing = bars["timestamp"][60]
    spans = [(t - 23 * BAR, t) for t in w["timestamp"]]
    assert not any(lo <= missing <= hi for lo, hi in spans)
    assert w.height < build_windows(bars, "ETH/USD", length=24).height


def test_windows_reject_bad_prices_naming_the_row() -> None:
    bars = (
        candles("BTC/USD", 3)
        .with_row_index()
        .with_columns(close=pl.when(pl.col("index") == 40).then(-1.0).otherwise(pl.col("close")))
    )
    with pytest.raises(ValueError, match="BTC/USD: non-positive or missing price at row 40"):
        build_windows(bars.drop("index"), "BTC/USD")


# -- encoder and model store -----------------------------------------------------------------------
def test_encoder_training_is_deterministic_and_round_trips_through_the_model_store(tmp_path: Path) -> None:
    x = window_matrix(build_windows(candles("BTC/USD", 40), "BTC/USD"))
    first, report = train_encoder(x, FAST)
    again, _ = train_encoder(x, FAST)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(encoder_tensors(first).values(), encoder_tensors(again).values(), strict=True)
    )
    assert len(report.train_loss) == 3 and report.train_loss[-1] < report.train_loss[0]
    store = ModelStore(tmp_path)
    folder = store.save("enc", "run-1", encoder_tensors(first), {"architecture": first.architecture()})
    assert store.latest("enc") == "run-1" and not any(p.name.startswith(".") for p in folder.parent.iterdir())
    tensors, config, version = store.load("enc")
    assert version == "run-1"
    assert np.array_equal(embed(load_encoder(tensors, config), x[:50]), embed(first, x[:50]))
    with pytest.raises(FileNotFoundError, match="no model 'other'"):
        store.load("other")
    with pytest.raises(ValueError, match="unsafe model version"):
        store.save("enc", "../up", encoder_tensors(first), {})


def test_embeddings_are_unit_vectors_of_the_chosen_dimension() -> None:
    x = window_matrix(build_windows(candles("SOL/USD", 30), "SOL/USD"))
    model, _ = train_encoder(x, FAST)
    for e in (embed(model, x), pca_embed(x, pca_basis(x, 32)), unit_rows(x)):
        assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert embed(model, x).shape == (len(x), 32)


# -- retrieval without look-ahead ------------------------------------------------------------------
def _memory(pairs: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, np.ndarray]:
    windows = pl.concat([build_windows(c, p, length=24) for p, c in pairs.items()])
    basis = pca_basis(window_matrix(windows), 8)
    return windows, pca_embed(window_matrix(windows), basis)


def _fill(store: VectorStore, windows: pl.DataFrame, vectors: np.ndarray) -> None:
    ids, payloads = window_points(windows, "test")
    store.upsert(ids, vectors, payloads)
    store.optimize()


def test_a_query_at_t_sees_only_windows_whose_outcome_was_known_by_t(store: VectorStore) -> None:
    windows, vectors = _memory({"BTC/USD": candles("BTC/USD", 20), "ETH/USD": candles("ETH/USD", 20)})
    _fill(store, windows, vectors)
    t = int(epoch_seconds(windows["timestamp"])[len(windows) // 4])
    hits = store.search(vectors[-1], 50, ended_by=t)
    assert len(hits) == 50 and all(h.payload["horizon_end"] <= t for h in hits)


def test_perturbing_everything_after_t_changes_nothing_a_query_at_t_sees(tmp_path: Path) -> None:
    """Two memories that agree on everything known by t and differ in everything after it (the vectors of later
    windows, every outcome not yet known at t, a pair that appears later): every forecast made at t is
    identical, in both engines."""
    windows, vectors = _memory({"BTC/USD": candles("BTC/USD", 20), "ETH/USD": candles("ETH/USD", 20)})
    ends, seen = epoch_seconds(windows["horizon_end"]), epoch_seconds(windows["timestamp"]) + 3600
    t = int(np.quantile(ends, 0.6))
    rng = np.random.default_rng(3)
    unknown_outcome = pl.Series(ends > t)
    changed = windows.with_columns(
        pl.when(unknown_outcome).then(pl.col(c) + 0.05).otherwise(pl.col(c)).alias(c) for c in ("fwd_1h", "fwd_6h")
    )
    noise = rng.standard_normal(vectors.shape).astype(np.float32)
    later = seen > t  # windows whose last bar closed after t
    perturbed = np.where(later[:, None], noise / np.linalg.norm(noise, axis=1, keepdims=True), vectors)
    later_btc = pl.Series(later & (windows["pair"] == "BTC/USD").to_numpy())
    extra = changed.filter(later_btc).with_columns(pair=pl.lit("XRP/USD"))  # a pair that appears later
    queries = np.flatnonzero(seen <= t)[-40:]
    known = np.full(queries.size, t)
    for name in ("edge", "client"):
        results = []
        for table, matrix, more in ((windows, vectors, None), (changed, perturbed, extra)):
            with (
                EdgeVectorStore(tmp_path / f"{name}-{len(results)}", 8) if name == "edge" else ClientVectorStore(8)
            ) as s:
                _fill(s, table, matrix)
                if more is not None:
                    _fill(s, more, perturbed[later_btc.to_numpy()])
                results.append(store_forecasts(s, matrix[queries], known, k=15, horizon=6))
        assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(results[0][1], results[1][1]), name


def test_the_store_forecast_equals_exact_search_and_the_base_rate_counts_only_known_outcomes(
    store: VectorStore,
) -> None:
    windows, vectors = _memory({"BTC/USD": candles("BTC/USD", 15)})
    _fill(store, windows, vectors)
    ends = epoch_seconds(windows["horizon_end"])
    outcome = windows["fwd_6h"].fill_null(np.nan).to_numpy()
    rows = np.arange(100, len(windows), 37)
    known = epoch_seconds(windows["timestamp"])[rows] + 3600
    got, used = store_forecasts(store, vectors[rows], known, k=10, horizon=6)
    want, want_used = exact_forecasts(vectors, ends, outcome, vectors[rows], known, k=10)
    assert np.array_equal(used, want_used) and np.allclose(got, want, atol=1e-6)
    rate = base_rate(ends, outcome, known)
    for i, when in enumerate(known):
        seen = outcome[(ends <= when) & np.isfinite(outcome)]
        assert rate[i] == pytest.approx(seen.mean())


# -- the planted motif -----------------------------------------------------------------------------
def test_a_planted_motif_is_retrieved_by_its_own_earlier_occurrences(tmp_path: Path) -> None:
    """The synthetic market repeats one shape (seeded) before a move; a window ending at a late occurrence's
    last shape bar finds the earlier occurrences (same phase, +/- 1 bar) among its nearest admissible windows,
    through the learned encoder and the embedded store."""
    settings = {"motif_rate": 8.0, "motif_length": 12, "motif_move": 3.0}
    pairs = {p: candles(p, 120, seed=21, **settings) for p in ("BTC/USD", "ETH/USD")}
    windows = pl.concat([build_windows(c, p) for p, c in pairs.items()])
    x = window_matrix(windows)
    model, _ = train_encoder(x, EncoderSettings(epochs=8, seed=2))
    vectors = embed(model, x)
    ends: dict[str, set[datetime]] = {}
    for pair, c in pairs.items():
        starts = motif_hours(pair, 21, ORIGIN, c.height, 8.0, 12)
        ends[pair] = {datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=int(h) + 11) for h in starts}
    with EdgeVectorStore(tmp_path / "edge", 32) as store:
        _fill(store, windows, vectors)
        late = [(p, t) for p in pairs for t in sorted(ends[p]) if t > datetime(2024, 3, 1, tzinfo=UTC)]
        found = []
        for pair, t in late:
            row = query_row(windows.filter(pl.col("pair") == pair), pair, t + BAR) + (
                0 if pair == "BTC/USD" else int((windows["pair"] == "BTC/USD").sum())
            )
            hits = store.search(vectors[row], 10, ended_by=int((t + BAR).timestamp()))
            times = [(datetime.fromtimestamp(h.payload["timestamp"], UTC), h.payload["pair"]) for h in hits]
            planted = [any(abs(when - e) <= BAR for e in ends[p]) for when, p in times]
            found.append(np.mean(planted))
    assert len(late) >= 10
    # noise windows would be planted neighbours about 3 * 0.009 of the time; the motif's own pasts dominate
    assert np.median(found) >= 0.5 and min(found) > 0


def test_similar_names_the_query_and_what_followed_each_neighbour(tmp_path: Path) -> None:
    windows, _ = _memory({"BTC/USD": candles("BTC/USD", 10), "ETH/USD": candles("ETH/USD", 10)})
    x = window_matrix(windows)
    model, _ = train_encoder(x, EncoderSettings(dim=8, hidden=16, epochs=2))
    embedded = embed(model, x)
    at = datetime(2024, 1, 8, 12, 30, tzinfo=UTC)
    with ClientVectorStore(8) as store:
        _fill(store, windows, embedded)
        found = similar(store, model, windows.filter(pl.col("pair") == "BTC/USD"), "BTC/USD", at, 5)
    assert found["query"]["window_end"] == "2024-01-08T11:00:00+00:00"  # its last bar closed at 12:00
    assert len(found["neighbours"]) == 5
    for n in found["neighbours"]:
        assert datetime.fromisoformat(n["horizon_end"]) <= at and n["fwd_24h"] is not None
    with pytest.raises(ValueError, match="no window of BTC/USD is known at 2023-12-01"):
        query_row(windows, "BTC/USD", datetime(2023, 12, 1, tzinfo=UTC))


# -- skill -----------------------------------------------------------------------------------------
def test_skill_and_the_ic_gain_test_see_a_real_edge_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    realized = rng.standard_normal(n)
    informed = realized + 2.0 * rng.standard_normal(n)
    noise = rng.standard_normal(n)
    good = skill(informed, realized)
    assert 0.3 < good["ic"] < 0.6 and good["hit_rate"] > 0.6 and good["n"] == n
    assert abs(skill(noise, realized)["ic"]) < 0.06
    gain = ic_gain_test(informed, noise, realized, n_boot=499)
    assert (
        gain.p_value < 0.01
        and gain.ci_low > 0
        and gain.estimate == pytest.approx(good["ic"] - skill(noise, realized)["ic"], abs=1e-9)
    )
    null = ic_gain_test(noise, rng.standard_normal(n), realized, n_boot=499)
    assert null.p_value > 0.01


# -- the analog strategy ---------------------------------------------------------------------------
def test_analog_knn_trades_the_forecast_sign_above_its_training_percentile() -> None:
    n = 400
    forecast = np.zeros(n)
    forecast[150:160], forecast[300:305] = 0.02, -0.02
    table = pl.DataFrame({ANALOG_COLUMN: forecast + np.linspace(-1e-4, 1e-4, n)})
    strategy = AnalogKnn(min_hold_bars=1)
    strategy.fit(table.head(140))
    positions = strategy.positions(table)
    assert positions[150] == 1 and positions[302] == -1 and positions[100] == 0
    assert strategy.params()["n_train"] == 140
    costly = AnalogKnn(min_edge=0.03)  # the forecasts do not pay a 3% round trip: no trade
    costly.fit(table.head(140))
    assert not costly.positions(table).any()
    with pytest.raises(ValueError, match="analog_knn needs feature columns"):
        strategy.positions(pl.DataFrame({"close": [1.0]}))


@pytest.mark.slow
def test_the_ic_gain_test_holds_its_size_with_overlapping_outcomes_and_persistent_forecasts() -> None:
    """Under the null (two forecasts independent of the outcome), with 6-hour outcomes that overlap and
    forecasts as persistent as the analog's (AR(1) 0.95), the one-sided test rejects at about alpha."""
    rejected, seeds, n = 0, 200, 2000
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        shocks = rng.standard_normal(n + 6)
        realized = np.convolve(shocks, np.ones(6), "valid")[:n]  # overlapping 6-bar sums
        a, b = np.zeros(n), np.zeros(n)
        ea, eb = rng.standard_normal(n), rng.standard_normal(n)
        for t in range(1, n):
            a[t], b[t] = 0.95 * a[t - 1] + ea[t], 0.95 * b[t - 1] + eb[t]
        rejected += ic_gain_test(a, b, realized, n_boot=199, seed=seed).p_value < 0.05
    rate = rejected / seeds
    assert 0.01 <= rate <= 0.09, rate  # 5% +/- 2.5 binomial SE at 200 seeds
