"""The storage root, the model store and the landing folder on S3, against moto's S3 server on 127.0.0.1.

The server runs in this process (``moto.server.ThreadedMotoServer``) on a free port; s3fs finds it the way
a user points the pipelines at MinIO or any S3-compatible store: ``AWS_ENDPOINT_URL_S3`` plus the usual
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (dummies here). Each test gets its own bucket.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest
import torch
from landing_ticks import Landing
from polars.testing import assert_frame_equal
from run_results import failure_text, materializations, tag, values
from test_market_assets import JAN, assert_hourly, key, kraken_csv
from upath import UPath

import cyber_pipelines.storage as storage_module
from assets.features import pair_features
from assets.market import ohlcv_candles
from cyber_pipelines import config
from cyber_pipelines.definitions import defs
from cyber_pipelines.landing import objects
from cyber_pipelines.landing.intake import Listed, intake_files, read_pending
from cyber_pipelines.landing.layout import LandingLayout
from cyber_pipelines.models.store import LATEST
from cyber_pipelines.resources import MarketDataResource, ModelStoreResource, StorageResource
from cyber_pipelines.storage import TableStore, content_hash

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

MARCH = date(2024, 3, 1)
LANDING_DAYS = [date(2024, 3, 10), date(2024, 3, 11)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket; the AWS variables point s3fs (and boto3) at the local server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")  # pragma: allowlist secret
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep another test's endpoint
    name = f"cyber-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    yield name
    s3fs.S3FileSystem.clear_instance_cache()


def keys(bucket: str, prefix: str = "") -> list[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def body(bucket: str, key_: str) -> bytes:
    return bytes(boto3.client("s3").get_object(Bucket=bucket, Key=key_)["Body"].read())


def put(bucket: str, key_: str, data: bytes | str) -> None:
    boto3.client("s3").put_object(Bucket=bucket, Key=key_, Body=data.encode() if isinstance(data, str) else data)


def candles_key(source: str, month: date) -> str:
    return f"data/{source}/ohlcv/BTC-USD/{month:%Y-%m}.parquet"


@pytest.fixture
def instance() -> dg.DagsterInstance:
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("pairs", ["BTC-USD"])
    return inst


def ingest(instance: dg.DagsterInstance, root: str, month: date = JAN) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [ohlcv_candles],
        instance=instance,
        partition_key=key(month),
        resources={"market": MarketDataResource(), "storage": StorageResource(root=root)},
        raise_on_error=False,
    )


# --- configuration --------------------------------------------------------------------------------
def test_an_s3_url_is_the_storage_root_and_the_landing_folder_follows_it(
    bucket: str, monkeypatch: pytest.MonkeyPatch, isolated_dirs: Path
) -> None:
    monkeypatch.setenv("CYBER_DATA_DIR", f"s3://{bucket}/data")
    monkeypatch.delenv("CYBER_LANDING_DIR")
    root, landing = config.data_dir(), config.landing_dir()
    assert isinstance(root, UPath) and str(root) == f"s3://{bucket}/data"
    assert isinstance(landing, UPath) and str(landing) == f"s3://{bucket}/data/inbox"
    assert str(StorageResource().store().root) == f"s3://{bucket}/data"
    assert str(ModelStoreResource().store().root) == f"s3://{bucket}/data/models"
    assert str(MarketDataResource(landing_dir=f"s3://{bucket}/in").landing_path()) == f"s3://{bucket}/in"
    monkeypatch.setenv("CYBER_DATA_DIR", str(isolated_dirs / "local"))  # the default stays a local folder
    assert config.data_dir() == isolated_dirs / "local" and isinstance(config.data_dir(), Path)
    assert StorageResource().store().root == isolated_dirs / "local"


# --- the storage root -----------------------------------------------------------------------------
def test_ingest_publishes_its_partition_to_s3_and_rematerializing_replaces_it(
    bucket: str, instance: dg.DagsterInstance, isolated_dirs: Path
) -> None:
    root = f"s3://{bucket}/data"
    first = ingest(instance, root)
    assert first.success, failure_text(first)
    assert keys(bucket) == [candles_key("synthetic", JAN)]  # one whole object: no temp object, nothing else
    stored = pl.read_parquet(body(bucket, candles_key("synthetic", JAN)))
    assert_hourly(stored, JAN, date(2024, 1, 31))
    (mat,) = materializations(first, "ohlcv_candles").values()
    assert values(mat)["path"] == f"s3://{bucket}/{candles_key('synthetic', JAN)}"
    version = tag(mat, "dagster/data_version")
    assert version == content_hash(stored)
    assert not (isolated_dirs / "data").exists()  # nothing went to the local default

    again = ingest(instance, root)
    assert again.success, failure_text(again)
    (mat2,) = materializations(again, "ohlcv_candles").values()
    assert tag(mat2, "dagster/data_version") == version  # same input, same data version
    assert keys(bucket) == [candles_key("synthetic", JAN)]
    assert_frame_equal(TableStore(root).read("synthetic", "ohlcv", "BTC-USD", "2024-01"), stored)


def test_a_reader_sees_the_old_table_until_the_one_put_and_a_failed_put_keeps_it(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"s3://{bucket}/data"
    store = TableStore(root)
    day = date(2024, 1, 1)
    hours = pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 1, 23), "1h", eager=True, time_zone="UTC")
    v1 = pl.DataFrame({"timestamp": hours, "x": range(24)})
    v2 = v1.with_columns(pl.col("x") * 10)
    store.publish_days({day: v1}, "synthetic", "toy", "2024-01")
    seen: list[pl.DataFrame] = []
    real_put = storage_module.put_object

    def put_watched(path: UPath, data: bytes) -> None:  # a reader looks just before the publish
        seen.append(TableStore(root).read("synthetic", "toy", "2024-01"))
        assert keys(bucket) == ["data/synthetic/toy/2024-01.parquet"]  # the new bytes are nowhere yet
        real_put(path, data)

    monkeypatch.setattr(storage_module, "put_object", put_watched)
    store.publish_days({day: v2}, "synthetic", "toy", "2024-01")
    assert_frame_equal(seen[0], v1)
    assert_frame_equal(store.read("synthetic", "toy", "2024-01"), v2)

    def put_fails(path: UPath, data: bytes) -> None:
        raise ConnectionError("network down during the publish")

    monkeypatch.setattr(storage_module, "put_object", put_fails)
    with pytest.raises(ConnectionError):
        store.publish_days({day: v1}, "synthetic", "toy", "2024-01")
    assert_frame_equal(store.read("synthetic", "toy", "2024-01"), v2)  # the previous version, whole

    def writer_fails(tmp: str) -> None:
        Path(tmp).write_bytes(b"PAR1 half a file")
        raise OSError("disk full while serialising")

    with pytest.raises(OSError, match="disk full"):
        storage_module.write_atomic(store.path("synthetic", "toy", "2024-01"), writer_fails)
    assert_frame_equal(store.read("synthetic", "toy", "2024-01"), v2)
    assert keys(bucket) == ["data/synthetic/toy/2024-01.parquet"]


def test_a_failed_publish_in_the_ingest_fails_the_run_and_keeps_the_stored_partition(
    bucket: str, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = f"s3://{bucket}/data"
    assert ingest(instance, root).success
    before = body(bucket, candles_key("synthetic", JAN))

    def put_fails(path: UPath, data: bytes) -> None:
        raise ConnectionError("S3 unreachable")

    monkeypatch.setattr(storage_module, "put_object", put_fails)
    failed = ingest(instance, root)
    assert not failed.success and "S3 unreachable" in failure_text(failed)
    assert materializations(failed, "ohlcv_candles") == {}
    assert body(bucket, candles_key("synthetic", JAN)) == before
    assert keys(bucket) == [candles_key("synthetic", JAN)]


def test_features_are_built_from_candles_stored_on_s3(bucket: str, instance: dg.DagsterInstance) -> None:
    root = f"s3://{bucket}/data"
    assert ingest(instance, root, JAN).success
    assert ingest(instance, root, date(2024, 2, 1)).success
    result = dg.materialize(
        [pair_features],
        instance=instance,
        partition_key="BTC-USD",
        resources={"market": MarketDataResource(), "storage": StorageResource(root=root)},
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    (mat,) = result.asset_materializations_for_node("pair_features")
    meta = values(mat)
    assert (
        meta["candle_rows"] == 24 * (31 + 29)
        and meta["path"] == f"s3://{bucket}/data/synthetic/features/BTC-USD.parquet"
    )
    table = pl.read_parquet(body(bucket, "data/synthetic/features/BTC-USD.parquet"))
    assert table.height == meta["rows"] and meta["content_hash"] == content_hash(table)


# --- the model store ------------------------------------------------------------------------------
def test_model_store_on_s3_writes_the_files_then_latest_and_loads_them(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStoreResource(root=f"s3://{bucket}/models").store()
    assert not store.local
    writes: list[str] = []
    real_put = storage_module.put_object

    def put_recorded(path: UPath, data: bytes) -> None:
        writes.append(path.name)
        real_put(path, data)

    monkeypatch.setattr("cyber_pipelines.models.store.put_object", put_recorded)
    weights = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    store.save("encoder_synthetic", "run-1", weights, {"dim": 3})
    assert writes == ["model.safetensors", "config.json", LATEST]  # the pointer last
    assert keys(bucket) == [
        "models/encoder_synthetic/LATEST",
        "models/encoder_synthetic/run-1/config.json",
        "models/encoder_synthetic/run-1/model.safetensors",
    ]
    tensors, cfg, version = store.load("encoder_synthetic")
    assert version == "run-1" and cfg == {"dim": 3}
    assert all(torch.equal(tensors[k], weights[k]) for k in weights)
    assert store.versions("encoder_synthetic") == ["run-1"] and store.names("encoder") == ["encoder_synthetic"]

    def config_put_fails(path: UPath, data: bytes) -> None:
        if path.name == "config.json":
            raise ConnectionError("lost the connection")
        real_put(path, data)

    monkeypatch.setattr("cyber_pipelines.models.store.put_object", config_put_fails)
    with pytest.raises(ConnectionError):
        store.save("encoder_synthetic", "run-2", {"w": torch.zeros(1)}, {"dim": 1})
    assert store.latest("encoder_synthetic") == "run-1"  # the failed save never became the latest
    assert store.load("encoder_synthetic")[2] == "run-1"
    with pytest.raises(FileNotFoundError, match="incomplete or missing"):
        store.load("encoder_synthetic", "run-2")


# --- the landing folder ---------------------------------------------------------------------------
@pytest.fixture
def s3_landing(bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The landing folder and the storage root on S3, as the environment would set them."""
    monkeypatch.setenv("CYBER_DATA_DIR", f"s3://{bucket}/data")
    monkeypatch.setenv("CYBER_LANDING_DIR", f"s3://{bucket}/inbox")
    return bucket


def test_landing_on_s3_stages_good_files_quarantines_bad_ones_and_the_candles_reach_the_table(
    s3_landing: str, instance: dg.DagsterInstance
) -> None:
    bucket = s3_landing
    text, expected = kraken_csv(LANDING_DAYS, seed=1)
    drops = {
        "XBTUSD_60.csv": text,
        "garbage.csv": "this is not,a market file\n1,2\n",
        "empty.json": "",
        "nested/BTC-USD.csv": "timestamp,open\n",  # a "folder": quarantined whole
    }
    for name, data in drops.items():
        put(bucket, f"inbox/{name}", data)
    for name in ("XBTUSD_60.csv", "garbage.csv", "empty.json", "nested"):
        put(bucket, f"inbox/{name}.done", "")
    put(bucket, "inbox/ETH-USD.csv.part", "timestamp,open,high\n")  # still being written: never taken

    landing = Landing(instance, Path("unused"))  # the sensor and the intake find the folder by CYBER_LANDING_DIR
    intakes = landing.tick()
    assert [r.job_name for r in intakes] == ["landing_intake"]
    listed = intakes[0].run_config["ops"]["intake_landing_files"]["config"]["files"]
    assert sorted(f["name"] for f in listed) == ["XBTUSD_60.csv", "empty.json", "garbage.csv", "nested"]
    assert all(f["etag"] for f in listed if f["name"] != "nested")  # the ETag is part of each identity
    run = defs.resolve_job_def("landing_intake").execute_in_process(
        instance=instance, run_config=intakes[0].run_config, tags=intakes[0].tags, raise_on_error=False
    )
    assert run.success, failure_text(run)

    inbox = keys(bucket, "inbox/")
    assert "inbox/processed/XBTUSD_60.csv" in inbox
    assert body(bucket, "inbox/processed/XBTUSD_60.csv") == text.encode()  # archived: the bytes that were staged
    staged = [k for k in inbox if k.startswith("inbox/staged/BTC-USD/")]
    assert len(staged) == 2 and staged[0].endswith(".json") and staged[1].endswith(".parquet")
    assert_frame_equal(pl.read_parquet(body(bucket, staged[1])), expected)
    for name, why in (("garbage.csv", "no timestamp column"), ("empty.json", "empty file")):
        assert f"inbox/quarantine/{name}" in inbox
        assert body(bucket, f"inbox/quarantine/{name}") == drops[name].encode()
        reason = body(bucket, f"inbox/quarantine/{name}.reason.txt").decode()
        assert reason.startswith("reason: ") and why in reason, reason
    assert "inbox/quarantine/nested/BTC-USD.csv" in inbox and "inbox/quarantine/nested.reason.txt" in inbox
    assert [k for k in inbox if k.count("/") == 1] == ["inbox/ETH-USD.csv.part"]  # left in the inbox itself
    assert not [k for k in inbox if k.endswith(".done")]  # markers go with their files

    (request,) = landing.tick()  # the staged file's ingest
    assert request.job_name == "market_ingest" and str(request.partition_key) == key(MARCH)
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        run_config=request.run_config,
        tags=request.tags,
        raise_on_error=False,
    )
    assert result.success, failure_text(result)
    assert_frame_equal(pl.read_parquet(body(bucket, candles_key("landing", MARCH))), expected)
    assert len(read_pending(LandingLayout(config.landing_dir()))) == 1  # deleted by the next tick
    assert landing.tick() == []  # nothing new: the hand-off is done
    assert read_pending(LandingLayout(config.landing_dir())) == []


def test_landing_on_s3_archives_only_the_version_it_staged(s3_landing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_landing
    root = config.landing_dir()
    text, _ = kraken_csv(LANDING_DAYS, seed=1)
    other, _ = kraken_csv(LANDING_DAYS, seed=2)
    put(bucket, "inbox/XBTUSD_60.csv", text)
    (entry,) = objects.list_objects(root)  # type: ignore[arg-type]
    listed = Listed(entry.name, entry.size, entry.mtime_ns, entry.etag)

    put(bucket, "inbox/XBTUSD_60.csv", other)  # replaced after the sensor listed it
    report = intake_files(root, [listed])
    assert report.accepted == [] and report.left[0][1].startswith("changed since it was listed")
    assert keys(bucket, "inbox/") == ["inbox/XBTUSD_60.csv"]  # nothing staged, nothing moved

    (entry,) = objects.list_objects(root)  # type: ignore[arg-type]
    real_get = objects.get_object

    def get_then_replace(path: UPath) -> bytes:  # a writer replaces the object while it is read
        data = real_get(path)
        put(bucket, "inbox/XBTUSD_60.csv", text)
        return data

    monkeypatch.setattr(objects, "get_object", get_then_replace)
    report = intake_files(root, [Listed(entry.name, entry.size, entry.mtime_ns, entry.etag)])
    assert report.accepted == [] and report.left[0][1].startswith("replaced while it was read")
    assert keys(bucket, "inbox/") == ["inbox/XBTUSD_60.csv"]
    monkeypatch.setattr(objects, "get_object", real_get)

    (entry,) = objects.list_objects(root)  # type: ignore[arg-type]
    fs = root.fs  # the cached client every path of these options shares
    real_copy = fs.cp_file

    def copy_then_replace(src: str, dst: str, **kwargs: Any) -> None:  # replaced during the archive's copy
        real_copy(src, dst, **kwargs)
        if "/processed/" in dst:
            put(bucket, "inbox/XBTUSD_60.csv", other)

    monkeypatch.setattr(fs, "cp_file", copy_then_replace)
    report = intake_files(root, [Listed(entry.name, entry.size, entry.mtime_ns, entry.etag)])
    assert len(report.accepted) == 1 and report.left[0][1].startswith("replaced while it was archived")
    inbox = keys(bucket, "inbox/")
    assert "inbox/XBTUSD_60.csv" in inbox and not [k for k in inbox if k.startswith("inbox/processed/")]
    assert body(bucket, "inbox/XBTUSD_60.csv") == other.encode()  # the new version waits for the next look


def test_the_staging_sequence_on_s3_only_grows_when_two_intakes_race(
    bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = UPath(f"s3://{bucket}/inbox/staged", use_listings_cache=False)
    assert [objects.next_sequence(root) for _ in range(3)] == [1, 2, 3]
    real_get = objects.get_object
    raced = {"done": False}

    def another_intake_first(path: UPath) -> bytes:  # between our read and our write, another takes 4
        data = real_get(path)
        if not raced["done"]:
            raced["done"] = True
            assert objects.next_sequence(root) == 4
        return data

    monkeypatch.setattr(objects, "get_object", another_intake_first)
    assert objects.next_sequence(root) == 5  # our compare-and-swap failed once, read again, took 5
    assert body(bucket, "inbox/staged/.sequence") == b"5\n"
