"""The models' domain code without Dagster: samples without look-ahead, the promotion test's size and power,
the references, LoRA adapters (frozen base, storage round trip, switching), and the synthetic ground truth."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from cyber_pipelines.models import adapters as lora
from cyber_pipelines.models import lifecycle
from cyber_pipelines.models.forecaster import Forecaster, TrainSettings, parameter_count, predict
from cyber_pipelines.models.periods import periods
from cyber_pipelines.models.promotion import decide, diebold_mariano
from cyber_pipelines.models.references import garch_11, har_rv, variance_scores
from cyber_pipelines.models.samples import SCALE_BARS, build_samples
from cyber_pipelines.models.store import ModelStore
from cyber_pipelines.synthetic.market import simulate_ohlcv

ORIGIN = date(2024, 1, 1)


def candles(pair: str, days: int, seed: int = 1, ar: float = 0.0) -> pl.DataFrame:
    end = ORIGIN + timedelta(days=days - 1)
    return simulate_ohlcv(pair, ORIGIN, end, seed=seed, effect_size=0.0, lag_hours=6, origin=ORIGIN, return_ar=ar)


# ---------------------------------------------------------------------------------------------- samples


def test_samples_never_see_after_their_bar_and_targets_are_the_next_hours() -> None:
    bars = candles("BTC/USD", 20)
    samples = build_samples(bars, "BTC/USD", length=24, horizon=3)
    t = 100
    moment = samples.timestamp[t]
    later = pl.col("timestamp") > pl.lit(moment).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    changed = bars.with_columns(
        [pl.when(later).then(pl.col(c) * 1.5).otherwise(pl.col(c)).alias(c) for c in ("open", "high", "low", "close")]
    )
    again = build_samples(changed, "BTC/USD", length=24, horizon=3)
    assert np.array_equal(again.x[: t + 1], samples.x[: t + 1])
    assert np.array_equal(again.scale[: t + 1], samples.scale[: t + 1])
    assert not np.array_equal(again.x[t + 1 :], samples.x[t + 1 :])  # the change is seen from the next bar on
    log_close = np.log(bars["close"].to_numpy())
    i = int(np.flatnonzero(bars["timestamp"].dt.replace_time_zone(None).to_numpy() == moment)[0])
    r = np.diff(log_close)[i : i + 3]  # bars i+1..i+3
    assert samples.ret[t] == pytest.approx(r.sum() / (samples.scale[t] * np.sqrt(3)))
    assert samples.var[t] == pytest.approx((r**2).sum() / (samples.scale[t] ** 2 * 3))
    assert samples.outcome_end[t] == moment + np.timedelta64(4, "h")  # the close of bar t+3
    assert i == SCALE_BARS + t  # the first sample needs a week of returns for its scale


def test_a_gap_drops_the_windows_and_horizons_across_it() -> None:
    bars = candles("ETH/USD", 20)
    holed = bars.filter(pl.col("timestamp") != bars["timestamp"][300])
    samples = build_samples(holed, "ETH/USD", length=24, horizon=1)
    gap = np.datetime64(bars["timestamp"][300].replace(tzinfo=None), "us")
    hour = np.timedelta64(1, "h")
    before = samples.ret[samples.timestamp == gap - hour]
    assert before.size == 1 and np.isnan(before[0])  # made before the gap: its outcome bar is missing
    assert np.isfinite(samples.ret[samples.timestamp == gap - 2 * hour]).all()
    after = samples.timestamp[samples.timestamp > gap]
    assert after.min() == gap + (SCALE_BARS + 1) * hour  # a week of returns after the first bar after the gap
    with pytest.raises(ValueError, match=r"row 5 .*non-positive price"):
        build_samples(
            bars.with_row_index()
            .with_columns(close=pl.when(pl.col("index") == 5).then(0.0).otherwise(pl.col("close")))
            .drop("index"),
            "ETH/USD",
        )


def test_periods_cut_before_the_first_out_of_sample_bar() -> None:
    when = periods([datetime(2024, 1, 3), datetime(2024, 1, 1)], 90, 30)
    assert when.cutoff == datetime(2024, 3, 31) and when.validation_start == datetime(2024, 3, 1)
    with pytest.raises(ValueError, match="validation_days must be in"):
        periods([datetime(2024, 1, 1)], 20, 30)


# ------------------------------------------------------------------------------------------- promotion


def test_diebold_mariano_holds_its_size_with_overlapping_fat_tailed_losses() -> None:
    rejections = 0
    seeds = 400
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        shocks = rng.standard_t(4, 606)
        d = np.convolve(shocks, np.ones(6) / 6, mode="valid")  # 6-hour horizons overlap: MA(5) differences
        base = rng.chisquare(2, d.size)
        test = diebold_mariano(base, base - d, horizon=6)
        rejections += test.p_value <= 0.05
    assert 0.02 <= rejections / seeds <= 0.08


def test_diebold_mariano_finds_a_real_improvement_and_its_interval_agrees() -> None:
    rng = np.random.default_rng(0)
    base = rng.chisquare(1, 2000)
    better = base - 0.1 + rng.normal(0, 0.5, 2000)
    test = diebold_mariano(base, better, alpha=0.05)
    assert test.p_value < 0.001 and test.ci_low > 0 and test.ci_low < test.improvement < test.ci_high
    with pytest.raises(ValueError, match="at least 30"):
        diebold_mariano(base[:10], better[:10])


def test_promotion_needs_a_margin_significance_and_no_worse_target() -> None:
    rng = np.random.default_rng(1)
    base = rng.chisquare(1, 1500)
    good = diebold_mariano(base, base - 0.05 + rng.normal(0, 0.2, 1500))
    tiny = diebold_mariano(base, base - 0.002 + rng.normal(0, 0.01, 1500))
    bad = diebold_mariano(base, base + 0.05 + rng.normal(0, 0.2, 1500))
    same = diebold_mariano(base, base + rng.normal(0, 0.2, 1500))
    assert decide({"return": good, "variance": same}).serves == ("return",)
    assert not decide({"return": tiny, "variance": same}, margin=0.005).promoted  # significant, under the margin
    mixed = decide({"return": good, "variance": bad})  # the base keeps the target the adapter does worse on
    assert mixed.serves == ("return",) and mixed.reason.startswith("the adapter serves return, the base variance")
    assert decide({"return": good, "variance": good}).serves == ("return", "variance")
    assert decide({"return": good, "variance": same}).p_adjusted["return"] >= good.p_value  # Holm


# ------------------------------------------------------------------------------------------ references


def test_garch_and_har_beat_a_constant_variance_on_clustered_volatility() -> None:
    bars = candles("SOL/USD", 120)
    samples = build_samples(bars, "SOL/USD")
    cut = datetime(2024, 3, 15)
    train, held = samples.known_by(cut), samples.between(cut, datetime(2024, 5, 1))
    constant = variance_scores(np.full(len(held), float(np.mean(train.var))), held.var)["qlike"]
    garch = variance_scores(garch_11(bars, cut, held), held.var)["qlike"]
    har = variance_scores(har_rv(train, held), held.var)["qlike"]
    assert garch < constant and har < constant
    assert np.all(har_rv(train, held) >= 0.1 * np.mean(train.var) - 1e-12)  # floored, QLIKE stays finite


# -------------------------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def trained() -> tuple[Forecaster, dict]:
    pairs = {"BTC/USD": 0.0, "ETH/USD": 0.0, "SOL/USD": 0.35}
    samples = {p: build_samples(candles(p, 80, seed=2, ar=ar), p) for p, ar in pairs.items()}
    when = periods([datetime(2024, 1, 1)], 70, 20)
    settings = lifecycle.ModelSettings(width=64, base=TrainSettings(epochs=3, learning_rate=3e-4))
    base, _ = lifecycle.fit_base(list(samples.values()), when, settings)
    return base, {"samples": samples, "when": when, "settings": settings}


def test_an_adapter_trains_only_its_own_weights_and_round_trips_through_the_store(
    trained: tuple[Forecaster, dict], tmp_path
) -> None:
    base, ctx = trained
    before = {k: v.clone() for k, v in base.state_dict().items()}
    samples = ctx["samples"]["SOL/USD"].known_by(ctx["when"].validation_start)
    settings = lora.AdapterSettings(rank=4)
    model, _ = lora.train_adapter(base, samples, settings, TrainSettings(epochs=2, learning_rate=1e-3))
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base is untouched
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert lora.trainable_parameters(model) == 4 * (64 + 64) + (64 * 2 + 2) + (75 * 2 + 2)  # A, B; own head, skip
    store = ModelStore(tmp_path)
    config = {"lora": lora.adapter_config(settings, base), "probe": lifecycle.probe(model, samples)}
    store.save("adapter-x", "v1", lora.adapter_tensors(model), config)
    tensors, loaded, _ = store.load("adapter-x")
    assert lifecycle.verify(tensors, loaded, base) == []
    server = lora.AdapterServer(lifecycle.load_forecaster_copy(base))
    server.add("SOL-USD", tensors, loaded["lora"])
    assert np.allclose(server.predict("SOL-USD", samples.x[:50]), predict(model, samples.x[:50]), atol=1e-6)
    assert np.allclose(server.predict("BTC-USD", samples.x[:50]), predict(base, samples.x[:50]), atol=1e-6)
    loaded["probe"]["output"][0] += 0.01
    assert any("probe" in p for p in lifecycle.verify(tensors, loaded, base))


def test_the_server_switches_between_pairs_adapters(trained: tuple[Forecaster, dict]) -> None:
    base, ctx = trained
    settings = lora.AdapterSettings(rank=2)
    x = ctx["samples"]["ETH/USD"].x[:20]
    models = {}
    server = lora.AdapterServer(lifecycle.load_forecaster_copy(base))
    for seed, key in enumerate(("BTC-USD", "ETH-USD", "SOL-USD")):
        samples = ctx["samples"][key.replace("-", "/")].known_by(ctx["when"].validation_start)
        model, _ = lora.train_adapter(base, samples, settings, TrainSettings(epochs=1, seed=seed, learning_rate=1e-2))
        models[key] = model
        server.add(key, lora.adapter_tensors(model), lora.adapter_config(settings, base))
    for key in ("SOL-USD", "BTC-USD", "SOL-USD", "ETH-USD"):
        assert np.allclose(server.predict(key, x), predict(models[key], x), atol=1e-6)
    assert not np.allclose(server.predict("SOL-USD", x), server.predict("BTC-USD", x))


def test_adapters_are_a_small_share_of_the_default_base() -> None:
    base = Forecaster(75)  # the pipeline's default width 1024, depth 1
    model = lora.attach(base, lora.AdapterSettings())
    assert lora.trainable_parameters(model) / parameter_count(base) < 0.02
    with pytest.raises(ValueError, match="not linear layers"):
        lora.AdapterSettings(target_modules=("nope",)).targets(base)


# ------------------------------------------------------------------------------------------ ground truth


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "ar"), [(22, -0.45), (23, 0.45)])
def test_only_the_pair_that_differs_from_the_pool_gets_a_promoted_adapter(seed: int, ar: float) -> None:
    pairs = {"BTC/USD": 0.0, "ETH/USD": 0.0, "DOT/USD": 0.0, "SOL/USD": ar}
    bars = {p: candles(p, 190, seed=seed, ar=a) for p, a in pairs.items()}
    settings = lifecycle.ModelSettings(
        width=128,
        base=TrainSettings(epochs=12, learning_rate=3e-4),
        adapter_training=TrainSettings(epochs=12, learning_rate=1e-3, weight_decay=0.0),
    )
    samples = {p: lifecycle.pair_samples(c, p, settings) for p, c in bars.items()}
    when = periods([datetime(2024, 1, 1)], 180, 90)
    base, _ = lifecycle.fit_base(list(samples.values()), when, settings)
    decisions = {p: lifecycle.fit_adapter(base, bars[p], samples[p], when, settings).decision for p in pairs}
    assert {p: d.promoted for p, d in decisions.items()} == {
        "BTC/USD": False, "ETH/USD": False, "DOT/USD": False, "SOL/USD": True}, {
        p: d.reason for p, d in decisions.items()}  # fmt: skip


def test_the_model_store_works_on_object_storage_through_fsspec(trained: tuple[Forecaster, dict]) -> None:
    from cyber_pipelines.resources import ModelStoreResource

    base, ctx = trained
    store = ModelStoreResource(root="memory://model-store-test").store()
    assert not store.local and str(store.root) == "memory://model-store-test"
    samples = ctx["samples"]["BTC/USD"]
    lifecycle.save_base(store, "synthetic", "run-1", base, {"periods": ctx["when"].as_dict()}, samples)
    loaded, config, version = lifecycle.load_base(store, "synthetic")
    assert version == "run-1" and store.versions(lifecycle.base_name("synthetic")) == ["run-1"]
    assert np.array_equal(predict(loaded, samples.x[:20]), predict(base, samples.x[:20]))
    tensors, _, _ = store.load(lifecycle.base_name("synthetic"))
    assert lifecycle.verify(tensors, config) == []
    settings = lora.AdapterSettings(rank=2)
    model = lora.attach(base, settings)
    store.save(lifecycle.adapter_store_name("synthetic", "BTC-USD"), "run-2", lora.adapter_tensors(model),
               {"base_version": "run-1", "lora": lora.adapter_config(settings, base),
                "promotion": {"serves": [], "reason": "kept the base"}})  # fmt: skip
    found = lifecycle.status(store, "synthetic")
    assert [(r["pair"], r["model"], r["adapter_version"]) for r in found["pairs"]] == [("BTC/USD", "base", "run-2")]
    assert not found["pairs"][0]["stale"]
    lifecycle.save_base(store, "synthetic", "run-3", base, {"periods": ctx["when"].as_dict()}, samples)
    chosen = lifecycle.serving(store, "synthetic", "BTC-USD")  # the adapter of run-1's base: the base serves
    assert chosen.stale and chosen.model == "base" and "trained on base run-1, not the latest" in chosen.reason
    with pytest.raises(FileNotFoundError, match="no model"):
        store.load("nothing-here")
