"""Pattern layer: every market window, a learned encoder, the windows' embeddings in Qdrant and the analog
forecasts that retrieval makes without look-ahead."""

import hashlib
import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.batch import latest_metadata, required_source
from assets.features import DEPS_UPDATED_AND_CHECKED, pair_features
from assets.partitions import PAIRS, pair_partitions
from cyber_pipelines.backtest.evaluation import TRAIN_DAYS
from cyber_pipelines.keys import key_to_pair
from cyber_pipelines.patterns.encoder import encoder_name

if TYPE_CHECKING:
    from cyber_pipelines.patterns.encoder import WindowEncoder
from cyber_pipelines.report import markdown_table
from cyber_pipelines.resources import ModelStoreResource, StorageResource, VectorStoreResource
from cyber_pipelines.storage import TableStore, content_hash, scan_parquet

WINDOWS_CODE_VERSION = "windows-1"
ENCODER_CODE_VERSION = "encoder-1"
EMBEDDINGS_CODE_VERSION = "embeddings-1"
ANALOG_CODE_VERSION = "analog-1"
POOL = "vector_store"  # one process at a time holds the embedded shard (set to 1 on the instance)
EMBEDDINGS_CHECK = "memory_complete"


def _windows(store: TableStore, source: str, pair_key: str) -> pl.DataFrame:
    try:
        return store.read(source, "pattern_windows", pair_key)
    except FileNotFoundError as exc:
        raise dg.Failure(
            f"no pattern windows for {key_to_pair(pair_key)}: materialize pattern_windows ({exc})"
        ) from exc


class WindowConfig(dg.Config):
    length: int = Field(default=48, ge=8, le=336, description="bars (hours) in a window")


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pair_features],
    group_name="patterns",
    kinds={"polars", "numpy"},
    code_version=WINDOWS_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "Every window of one pair's recent bars (default 48 hours), normalized: returns over the window's "
        "volatility, high-low range over its mean, volume z-score, and its volatility against the trailing 30 "
        "days; with the forward log returns at 1, 6 and 24 hours, the time the 24-hour outcome is known "
        "(horizon_end: retrieval at time T sees only windows with horizon_end <= T) and a causal volatility "
        "regime. Written to `<data>/<source>/pattern_windows/<PAIR>.parquet`."
    ),
)
def pattern_windows(
    context: dg.AssetExecutionContext, config: WindowConfig, storage: StorageResource
) -> dg.MaterializeResult:
    from cyber_pipelines.patterns.windows import build_windows, window_dim, window_matrix

    pair_key = context.partition_key
    source = required_source(context, pair_features.key, pair_key)
    store = storage.store()
    pair = key_to_pair(pair_key)
    try:
        windows = build_windows(store.read(source, "features", pair_key), pair, config.length)
    except (FileNotFoundError, ValueError) as exc:
        raise dg.Failure(f"cannot build the windows of {pair} ({source}): {exc}") from exc
    if windows.height == 0:  # a new pair: an empty memory until it has the bars (not a failure)
        context.log.warning(f"{pair} ({source}): no window of {config.length} consecutive bars in its features yet")
    path = store.write(windows, source, "pattern_windows", pair_key)
    regimes = windows["regime"].value_counts().sort("regime")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(
            hashlib.sha256(
                content_hash(windows.drop("vector")).encode() + window_matrix(windows).tobytes()
            ).hexdigest()[:24]
        ),
        metadata={
            "source": source,
            "pair": pair,
            "windows": windows.height,
            "with_outcome": int(windows["fwd_24h"].is_not_null().sum()),
            "window_hours": config.length,
            "dim": window_dim(config.length),
            "first_window_end": str(windows["timestamp"].min()),
            "last_window_end": str(windows["timestamp"].max()),
            "regimes": dg.MetadataValue.md(markdown_table(regimes)),
            "path": dg.MetadataValue.path(str(path)),
        },
    )


class EncoderConfig(dg.Config):
    dim: int = Field(default=32, ge=2, le=512, description="embedding dimension")
    hidden: int = Field(default=128, ge=2, description="hidden units of the encoder and decoder")
    epochs: int = Field(default=30, ge=1, le=1000)
    seed: int = Field(default=0, ge=0, description="seeds the weights and the batch order (deterministic on CPU)")
    train_days: int = Field(
        default=TRAIN_DAYS,
        ge=7,
        description="trained on windows known by this many days after the earliest pair's first bar: the backtests' "
        "first out-of-sample bar (walk-forward: no evaluated bar is ever seen in training)",
    )
    comparison_queries: int = Field(default=1000, ge=50, description="out-of-sample windows of the encoder vs PCA test")
    k: int = Field(default=20, ge=1, le=200, description="neighbours of the analog forecast in that test")


@dg.asset(
    deps=[dg.AssetDep(pattern_windows, partition_mapping=dg.AllPartitionMapping())],
    group_name="patterns",
    kinds={"torch"},
    code_version=ENCODER_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    description=(
        "The window encoder: a small autoencoder (window -> 128 -> 32 -> 128 -> window, MSE, AdamW), seeded and "
        "deterministic on CPU, trained on every pair's windows whose outcome was known before the backtests' first "
        "out-of-sample bar. Saved as safetensors + JSON config in the model store, versioned by this run. "
        "Measured out of sample against the plain window and its PCA of the same dimension: the analog "
        "forecast's IC and hit rate, and how much of the window's neighbourhood each keeps."
    ),
)
def pattern_encoder(
    context: dg.AssetExecutionContext, config: EncoderConfig, storage: StorageResource, models: ModelStoreResource
) -> dg.MaterializeResult:
    import torch

    from cyber_pipelines.patterns import analog
    from cyber_pipelines.patterns.encoder import (
        EncoderSettings,
        embed,
        encoder_tensors,
        final_loss,
        pca_basis,
        pca_embed,
        train_encoder,
        unit_rows,
    )
    from cyber_pipelines.patterns.memory import training_cutoff
    from cyber_pipelines.patterns.skill import compare_representations
    from cyber_pipelines.patterns.windows import BAR, epoch_seconds, window_matrix

    source = required_source(context, pattern_windows.key)
    store = storage.store()
    keys = [
        k for k in sorted(context.instance.get_dynamic_partitions(PAIRS)) if store.exists(source, "pattern_windows", k)
    ]
    if not keys:
        raise dg.Failure(f"no stored {source} pattern windows for any pair: materialize pattern_windows first")
    frames = [store.read(source, "pattern_windows", k) for k in keys]
    dims = {window_matrix(f.head(1)).shape[1] for f in frames}
    if len(dims) != 1:
        raise dg.Failure(f"the pairs' windows have different lengths (dims {sorted(dims)}): rebuild them alike")
    windows = pl.concat(frames).sort("horizon_end", "pair")
    cutoff = training_cutoff([f["timestamp"][0] for f in frames], config.train_days)
    train = windows.filter(pl.col("horizon_end") <= cutoff)
    settings = EncoderSettings(dim=config.dim, hidden=config.hidden, epochs=config.epochs, seed=config.seed)
    train_x = window_matrix(train)
    # The same training windows and settings make the same model (deterministic): keep its version, so that
    # new days after the training period do not re-embed every pair's memory.
    fingerprint = hashlib.sha256(
        train_x.tobytes() + json.dumps(asdict(settings), sort_keys=True).encode() + ENCODER_CODE_VERSION.encode()
    ).hexdigest()[:24]
    name = encoder_name(source)
    kept = _same_encoder(models, name, fingerprint)
    if kept is not None:
        model, training, version = kept
        context.log.info(f"training windows and settings unchanged: keeping encoder {version}")
    else:
        try:
            model, report = train_encoder(train_x, settings)
        except ValueError as exc:
            raise dg.Failure(f"cannot train the encoder on windows known by {cutoff}: {exc}") from exc
        version = context.run_id
        training = {
            "windows": report.n_train,
            "validation_windows": report.n_validation,
            "train_loss": report.train_loss,
            "validation_loss": report.validation_loss,
            "seconds": round(report.seconds, 2),
            "settings": report.settings,
            "fingerprint": fingerprint,
        }

    x = window_matrix(windows)
    ends = epoch_seconds(windows["horizon_end"])
    asked = epoch_seconds(windows["timestamp"]) + int(BAR.total_seconds())  # known at each window's close
    outcome = windows[f"fwd_{analog.DEFAULT_HORIZON}h"].fill_null(np.nan).to_numpy()
    later = np.flatnonzero((windows["timestamp"] >= cutoff).to_numpy() & np.isfinite(outcome))
    queries = np.sort(
        np.random.default_rng(config.seed).choice(later, min(config.comparison_queries, later.size), False)
    )
    representations = {
        "encoder": embed(model, x),
        "pca": pca_embed(x, pca_basis(train_x, config.dim)),
        "window": unit_rows(x),
    }
    comparison = compare_representations(representations, ends, asked, outcome, queries, k=config.k)

    saved = models.store().folder(name, version)
    if kept is None:
        probe = train_x[:1]
        models.store().save(
            name,
            version,
            encoder_tensors(model),
            {
                "architecture": model.architecture(),
                "source": source,
                "pairs": [key_to_pair(k) for k in keys],
                "window_dim": int(x.shape[1]),
                "trained_through": cutoff.isoformat(),
                "training": training,
                "comparison": comparison,
                "probe": {"input": probe[0].tolist(), "output": embed(model, probe)[0].tolist()},
                "run_id": version,
                "torch": torch.__version__,
            },
        )
    table = pl.DataFrame(
        [{"representation": name, **{k: float(v) for k, v in figures.items()}} for name, figures in comparison.items()]
    )
    losses = pl.DataFrame(
        {
            "epoch": list(range(1, len(training["train_loss"]) + 1)),
            "train": training["train_loss"],
            "validation": training["validation_loss"],
        }
    )
    digest = hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()[:24]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(digest),
        metadata={
            "source": source,
            "version": version,
            "retrained": kept is None,
            "pairs": ", ".join(key_to_pair(k) for k in keys),
            "trained_through": cutoff.isoformat(),
            "train_windows": training["windows"],
            "train_loss": final_loss(training["train_loss"]),
            "validation_loss": final_loss(training["validation_loss"]),
            "training_seconds": training["seconds"],
            "loss_by_epoch": dg.MetadataValue.md(markdown_table(losses)),
            "encoder_vs_pca": dg.MetadataValue.md(
                f"Out of sample ({len(queries)} windows after {cutoff:%Y-%m-%d}, exact search among windows known "
                f"by then, k={config.k}, {analog.DEFAULT_HORIZON} h forward return):\n\n" + markdown_table(table)
            ),
            **{f"ic/{name}": figures["ic"] for name, figures in comparison.items()},
            **{f"overlap_with_window/{name}": figures["overlap_with_window"] for name, figures in comparison.items()},
            "model_path": dg.MetadataValue.path(str(saved)),
        },
    )


def _same_encoder(models: ModelStoreResource, name: str, fingerprint: str) -> tuple["WindowEncoder", dict, str] | None:
    """The latest encoder if it was trained on these windows with these settings (its fingerprint), else None."""
    from cyber_pipelines.patterns.encoder import load_encoder

    store = models.store()
    if store.latest(name) is None:
        return None
    tensors, config, version = store.load(name)
    if (config.get("training") or {}).get("fingerprint") != fingerprint:
        return None
    return load_encoder(tensors, config), config["training"], version


def _load_encoder(models: ModelStoreResource, source: str) -> tuple["WindowEncoder", dict, str]:
    from cyber_pipelines.patterns.encoder import load_encoder

    try:
        tensors, config, version = models.store().load(encoder_name(source))
    except FileNotFoundError as exc:
        raise dg.Failure(f"{exc} (materialize pattern_encoder)") from exc
    return load_encoder(tensors, config), config, version


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pattern_windows, pattern_encoder],
    group_name="patterns",
    kinds={"qdrant", "torch"},
    code_version=EMBEDDINGS_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    pool=POOL,
    check_specs=[
        dg.AssetCheckSpec(
            EMBEDDINGS_CHECK,
            asset="pattern_embeddings",
            blocking=True,
            partitions_def=pair_partitions,
            description="The pair's points equal its windows, no id repeats, and recall@10 of the index against "
            "exact search on 100 of its windows is >= 0.95.",
        )
    ],
    description=(
        "Every window of one pair encoded by the latest pattern_encoder and upserted into the vector store with "
        "payload (pair, timestamp, horizon_end, regime, forward returns, encoder version); ids from pair and "
        "timestamp, so re-materializing replaces and never duplicates. Embedded Qdrant Edge by default (pool "
        "vector_store: one writer at a time), a Qdrant server when QDRANT_URL is set. Blocking check: count, "
        "duplicates, recall."
    ),
)
def pattern_embeddings(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    models: ModelStoreResource,
    vectors: VectorStoreResource,
) -> dg.MaterializeResult:
    from cyber_pipelines.patterns.encoder import embed
    from cyber_pipelines.patterns.memory import audit_pair, index_pair, unwritten_audit, window_points
    from cyber_pipelines.patterns.windows import window_matrix

    pair_key = context.partition_key
    pair = key_to_pair(pair_key)
    source = required_source(context, pattern_windows.key, pair_key)
    store = storage.store()
    windows = _windows(store, source, pair_key)
    model, config, version = _load_encoder(models, source)
    x = window_matrix(windows)
    if x.shape[1] != config["window_dim"]:
        raise dg.Failure(
            f"{pair}: windows have {x.shape[1]} values, the encoder {version} takes {config['window_dim']}: "
            "rebuild the windows or retrain the encoder"
        )
    embedded = embed(model, x)
    ids, payloads = window_points(windows, version)
    removed = 0
    with vectors.session(store.root, source, embedded.shape[1]) as memory:
        if len(set(ids)) < len(ids):  # audited before writing: the previous memory of the pair stays
            audit = unwritten_audit(memory, pair, ids)
            context.log.error(f"{pair}: not written to the vector store: {'; '.join(audit.reasons())}")
        else:
            removed = index_pair(memory, pair, ids, embedded, payloads)
            audit = audit_pair(memory, pair, ids, embedded)
    context.log.info(f"{pair}: {audit.stored} points in {vectors.location(store.root, source)}")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(hashlib.sha256(embedded.tobytes() + json.dumps(ids).encode()).hexdigest()[:24]),
        metadata={
            "source": source,
            "pair": pair,
            "points": audit.stored,
            "windows": audit.windows,
            "written": audit.written,
            "stale_points_removed": removed,
            "encoder_version": version,
            "dim": int(embedded.shape[1]),
            "store": vectors.location(store.root, source),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=EMBEDDINGS_CHECK,
                passed=audit.passed,
                metadata={
                    "windows": audit.windows,
                    "points": audit.stored,
                    "duplicate_ids": audit.duplicate_ids,
                    f"recall_at_{audit.k}": audit.recall,
                    "queries": audit.queries,
                    "failures": "; ".join(audit.reasons()) or "none",
                },
            )
        ],
    )


class AnalogConfig(dg.Config):
    k: int = Field(default=20, ge=1, le=200, description="nearest admissible windows per forecast")
    horizon_hours: int = Field(default=6, description="forward return forecast: 1, 6 or 24 hours")
    train_days: int = Field(default=TRAIN_DAYS, ge=7, description="skill is reported on the bars after these days")


@dg.asset(
    partitions_def=pair_partitions,
    deps=[pattern_windows, dg.AssetDep(pattern_embeddings, partition_mapping=dg.AllPartitionMapping())],
    group_name="patterns",
    kinds={"qdrant", "polars"},
    code_version=ANALOG_CODE_VERSION,
    automation_condition=DEPS_UPDATED_AND_CHECKED,
    pool=POOL,
    description=(
        "Per bar of one pair, the analog forecast: the similarity-weighted forward return of the k nearest windows "
        "of any pair whose outcome was known by that bar's close (a payload filter on horizon_end), beside the "
        "no-retrieval base rate (the mean outcome of every window known by then). Out-of-sample skill of both: "
        "rank IC, hit rate, and a studentized block-bootstrap test that retrieval raises the IC. Written to "
        "`<data>/<source>/analog_forecasts/<PAIR>.parquet`; the backtests trade it as analog_knn."
    ),
)
def analog_forecasts(
    context: dg.AssetExecutionContext,
    config: AnalogConfig,
    storage: StorageResource,
    models: ModelStoreResource,
    vectors: VectorStoreResource,
) -> dg.MaterializeResult:
    from datetime import timedelta

    from cyber_pipelines.patterns.analog import base_rate, store_forecasts
    from cyber_pipelines.patterns.encoder import embed
    from cyber_pipelines.patterns.skill import ic_gain_test, skill
    from cyber_pipelines.patterns.windows import BAR, HORIZONS, epoch_seconds, window_matrix

    if config.horizon_hours not in HORIZONS:
        raise dg.Failure(f"horizon_hours must be one of {HORIZONS}, got {config.horizon_hours}")
    pair_key = context.partition_key
    pair = key_to_pair(pair_key)
    source = required_source(context, pattern_windows.key, pair_key)
    store = storage.store()
    model, _, version = _load_encoder(models, source)
    keys = sorted(context.instance.get_dynamic_partitions(PAIRS))
    stale = [
        key_to_pair(k)
        for k in keys
        if store.exists(source, "pattern_windows", k)
        and (latest_metadata(context.instance, pattern_embeddings.key, [k]) or {}).get("encoder_version") != version
    ]
    if stale:
        raise dg.Failure(
            f"the memory of {', '.join(stale)} was not made by the latest encoder {version}: "
            "materialize pattern_embeddings for them first"
        )
    windows = _windows(store, source, pair_key)
    key = f"fwd_{config.horizon_hours}h"
    memory = pl.concat(  # the base rate needs only when each outcome was known and what it was, not the vectors
        [
            scan_parquet([store.path(source, "pattern_windows", k)]).select("horizon_end", key)
            for k in keys
            if store.exists(source, "pattern_windows", k)
        ]
    ).collect()
    asked = epoch_seconds(windows["timestamp"]) + int(BAR.total_seconds())
    embedded = embed(model, window_matrix(windows))
    with vectors.session(store.root, source, embedded.shape[1]) as index:
        forecast, used = store_forecasts(index, embedded, asked, k=config.k, horizon=config.horizon_hours)
    base = base_rate(epoch_seconds(memory["horizon_end"]), memory[key].fill_null(np.nan).to_numpy(), asked)
    table = windows.select(
        "timestamp",
        analog_forecast=pl.Series(forecast),
        base_forecast=pl.Series(base),
        neighbours=pl.Series(used),
        realized=pl.col(key),
    )
    path = store.write(table, source, "analog_forecasts", pair_key)
    oos = table.filter(pl.col("timestamp") >= windows["timestamp"][0] + timedelta(days=config.train_days))
    realized = oos["realized"].fill_null(np.nan).to_numpy()
    a, b = oos["analog_forecast"].to_numpy(), oos["base_forecast"].to_numpy()
    analog_skill, base_skill = skill(a, realized), skill(b, realized)
    try:
        gain = ic_gain_test(a, b, realized, min_block=24 + config.horizon_hours)
        gain_text = (
            f"IC gain {gain.estimate:+.4f} (90% CI {gain.ci_low:+.4f}..{gain.ci_high:+.4f}), one-sided p "
            f"{gain.p_value:.3f} ({gain.method}, block {gain.block_len} bars)"
        )
        gain_figures = {"ic_gain": gain.estimate, "ic_gain_p": gain.p_value}
    except ValueError as exc:
        gain_text, gain_figures = f"no test: {exc}", {}
    skills = pl.DataFrame(
        [
            {"forecast": "analog (retrieval)", **analog_skill},
            {"forecast": "base rate (no retrieval)", **base_skill},
        ]
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(content_hash(table)),
        metadata={
            "source": source,
            "pair": pair,
            "bars": table.height,
            "oos_bars": oos.height,
            "k": config.k,
            "horizon_hours": config.horizon_hours,
            "encoder_version": version,
            "coverage": float(np.mean(used > 0)) if used.size else 0.0,
            "ic/analog": analog_skill["ic"],
            "ic/base_rate": base_skill["ic"],
            "hit_rate/analog": analog_skill["hit_rate"],
            "hit_rate/base_rate": base_skill["hit_rate"],
            **gain_figures,
            "skill": dg.MetadataValue.md(
                f"Out of sample ({oos.height} bars after the first {config.train_days} days):\n\n"
                + markdown_table(skills)
                + f"\n\n{gain_text}"
            ),
            "path": dg.MetadataValue.path(str(path)),
        },
    )
