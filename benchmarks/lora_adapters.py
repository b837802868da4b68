"""Learned LoRA adapters (issue 11): base training, adapter training, adapter size, recovered gain, serving.

Run: ``.venv/bin/python benchmarks/lora_adapters.py [--pool 4] [--days 456] [--ar 0.3] [--serving-pairs 15]``.
Prints one JSON line (progress goes to stderr). Took 78 s on the quiet 2-core machine with the defaults
(load 1.6; the base 19 s of it), and 8 minutes while other work kept the load average at 3-5.

Data: ``--pool`` pool pairs (``return_ar`` 0) and one distinct pair (AR(1) returns with ``--ar``),
simulated hourly from ``ORIGIN`` over ``--days`` days (seed ``--seed``), turned into samples with the
pipeline's defaults (24-bar windows, 1 hour ahead). The first sample of every pair comes after a week
of warm-up (the trailing scale); the *training year* is the first 8766 samples (hourly, 365.25 days)
of each pair, the *held-out period* every sample after it (about 83 days with the defaults). The models
use the pipeline's defaults (``ModelSettings``): width 1024, depth 1; base trained with
``TrainSettings(learning_rate=3e-4)``, adapters (rank 8, alpha 16, ``hidden.0``, own head) with
``TrainSettings(learning_rate=1e-3, weight_decay=0.0)``; both early-stopped on the last 20% of their
training samples (at most 30 epochs, patience 5).

Figures (``cpu`` section; each phase runs in a fresh Python process, so each peak is its own):

- ``base``: the base trained on every pair's training year together: ``seconds`` (``fit``'s own timer:
  the epochs, validation and best-weights copies), ``cpu_seconds``, ``epochs`` run, ``parameters``, ``peak_rss_mib``
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the phase's process: the Python interpreter, torch,
  the simulated data and training; ``rss_before_training_mib`` is VmRSS just before ``fit``).
- ``adapter_training``: per pair, one adapter trained on its training year (8766 samples, of which 20%
  are its early-stopping tail): ``seconds`` (wall time of ``train_adapter``: the base copied and wrapped,
  then ``fit``), ``fit_seconds`` (``fit``'s own timer), ``cpu_seconds`` (the process's CPU time, all
  threads: on a busy machine wall time grows, CPU time much less) and epochs; ``max_seconds`` against the
  target (<= 30 s).
- ``adapter_size``: trainable adapter parameters (LoRA A/B plus the adapter's own head) over the base's
  parameters, against the target (<= 2%); the LoRA matrices alone are reported too.
- ``gain``: for the distinct pair and one pool pair, the held-out loss (``target_losses``: the return's
  squared error, the variance's QLIKE, and their sum ``combined``; standardized units) of the base, the
  adapter and full fine-tuning (``train_full``: every weight of a copy of the base, on the same year,
  ``--full-lr``); each model's gain over the base (positive: lower loss) with a Diebold-Mariano test
  (``models.promotion.diebold_mariano``: HLN, Newey-West; one-sided p, 90% interval); and
  ``share_recovered`` = adapter gain / full fine-tuning gain. The share is only meaningful where full
  fine-tuning's combined gain is significant (``share_meaningful``: p < 0.05); on a pool pair the base
  already knows the dynamics and both gains are noise around 0.
- ``serving``: one process holding the base and ``--serving-pairs`` adapters in one ``AdapterServer``.
  The adapters of the measured pairs are the trained ones; the others belong to further simulated pool
  pairs, trained the same way except for at most ``--serving-epochs`` epochs (their values do not
  change the latency or the memory, only their existence does). Latency of ``AdapterServer.predict`` on
  one held-out window (``perf_counter`` around the call, after ``--warmup`` calls): ``switch`` cycles
  through the pairs so every call switches adapter; ``same_pair`` repeats one pair; ``base_plain`` is
  ``forecaster.predict`` on a plain copy of the base; ``switch_one_thread`` repeats ``switch`` after
  ``torch.set_num_threads(1)`` (a diagnostic: on a busy 2-core machine a one-row forward with two intra-op
  threads often waits a scheduler slice, about 16 ms, for the second thread; one thread does not).
  Target: switch p99 <= 10 ms. ``peak_rss_mib`` of
  the serving process (interpreter, torch, peft, the base and the adapters; no training data) against
  the target (< 2 GiB); ``max_abs_diff_vs_trained`` checks that the served adapters reproduce the
  trained models' forecasts.

``gpu``: when ``torch.cuda.is_available()``, the same training-time and latency figures on it (a fresh
process). ``fit``, ``predict`` and ``AdapterServer`` move nothing to a device (CPU is the default
everywhere), so this phase runs a copy of ``fit``'s loop (same loss, optimizer, batches, early stopping)
on CUDA tensors and calls ``set_adapter`` and the model directly; peak memory there is
``torch.cuda.max_memory_allocated``. Otherwise ``"gpu": "not available"``.

``machine``: CPU count and the load average before and after the run, each phase's
``loadavg_1m_at_start`` and torch's thread count (the machine may be shared with other work: a load
above the core count slows every figure). ``--accelerator cpu`` runs the GPU phase's code on the CPU
(a test of that code, not a figure).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ORIGIN = date(2023, 1, 1)
YEAR_HOURS = 8766
POOL_NAMES = ("BTC/USD", "ETH/USD", "SOL/USD", "ADA/USD", "DOT/USD", "LINK/USD", "AVAX/USD", "ATOM/USD",
              "LTC/USD", "XLM/USD", "ALGO/USD", "NEAR/USD", "UNI/USD", "FIL/USD", "AAVE/USD", "ETC/USD",
              "BCH/USD", "TRX/USD", "XTZ/USD", "EOS/USD")  # fmt: skip
DISTINCT_NAME = "XRP/USD"
TARGETS = {"adapter_seconds": 30.0, "adapter_share": 0.02, "switch_p99_ms": 10.0, "memory_mib": 2048.0}
SIGNIFICANCE = 0.05


def log(message: str) -> None:
    print(f"[lora_adapters {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    """Current resident set size (VmRSS) of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
        "calls": len(ms),
    }


# ------------------------------------------------------------------------------------------------------ data


def pair_list(args: argparse.Namespace) -> list[tuple[str, float]]:
    """The measured pairs: the pool pairs (AR 0), then the distinct pair."""
    return [(name, 0.0) for name in POOL_NAMES[: args.pool]] + [(DISTINCT_NAME, args.ar)]


def serving_extra_pairs(args: argparse.Namespace) -> list[str]:
    """Further pool pairs whose adapters fill the server up to ``--serving-pairs``."""
    extra = max(0, args.serving_pairs - args.pool - 1)
    names = list(POOL_NAMES[args.pool : args.pool + extra])
    if len(names) < extra:
        raise SystemExit(f"--serving-pairs {args.serving_pairs}: only {len(POOL_NAMES) + 1} pair names known")
    return names


def pair_samples(pair: str, ar: float, args: argparse.Namespace) -> Any:
    from cyber_pipelines.models.samples import build_samples
    from cyber_pipelines.synthetic.market import simulate_ohlcv

    candles = simulate_ohlcv(
        pair, ORIGIN, ORIGIN + timedelta(days=args.days - 1), seed=args.seed, effect_size=0.0, lag_hours=6,
        origin=ORIGIN, return_ar=ar,
    )  # fmt: skip
    return build_samples(candles, pair)


def split_year(samples: Any) -> tuple[Any, Any]:
    """(the training year: the first YEAR_HOURS samples, the held-out period: every sample after it)."""
    start = samples.timestamp[0].astype(datetime)
    end = start + timedelta(hours=YEAR_HOURS)
    train = samples.between(start, end)
    held_out = samples.between(end, samples.timestamp[-1].astype(datetime) + timedelta(hours=1))
    if len(train) != YEAR_HOURS:
        raise SystemExit(f"{samples.pair}: {len(train)} training samples, need {YEAR_HOURS}: raise --days")
    if len(held_out) < 30 * 24:
        raise SystemExit(f"{samples.pair}: {len(held_out)} held-out samples (need 720): raise --days")
    return train, held_out


def model_settings() -> Any:
    from cyber_pipelines.models.lifecycle import ModelSettings

    return ModelSettings()


# ------------------------------------------------------------------------------------------------- phases


def phase_base(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Train the base on every measured pair's training year; save it for the other phases."""
    from safetensors.torch import save_file

    from cyber_pipelines.models.forecaster import parameter_count, train_base
    from cyber_pipelines.models.samples import concat

    settings = model_settings()
    years = [split_year(pair_samples(pair, ar, args))[0] for pair, ar in pair_list(args)]
    train = concat(years)
    rss_before = rss_mib()
    log(f"base: {len(train)} samples, width {settings.width}, depth {settings.depth}")
    began_cpu = time.process_time()
    model, report = train_base(train, settings.width, settings.depth, settings.base)
    cpu = time.process_time() - began_cpu
    save_file(dict(model.state_dict()), str(workdir / "base.safetensors"))
    (workdir / "base.json").write_text(json.dumps(model.architecture()))
    log(f"base: {report.seconds:.1f} s, {len(report.train_loss)} epochs (best {report.best_epoch})")
    return {
        "seconds": round(report.seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "epochs": len(report.train_loss),
        "best_epoch": report.best_epoch,
        "n_train": report.n_train,
        "n_validation": report.n_validation,
        "parameters": parameter_count(model),
        "rss_before_training_mib": rss_before,
        "peak_rss_mib": peak_rss_mib(),
    }


def load_base(workdir: Path) -> Any:
    from safetensors.torch import load_file

    from cyber_pipelines.models.forecaster import load_forecaster

    return load_forecaster(
        load_file(str(workdir / "base.safetensors")), json.loads((workdir / "base.json").read_text())
    )


def gain_report(base: Any, adapter: Any, full: Any, held_out: Any) -> dict[str, Any]:
    """Held-out losses of base, adapter and full fine-tuning; gains over the base with their DM tests."""
    from cyber_pipelines.models.forecaster import target_losses
    from cyber_pipelines.models.promotion import diebold_mariano

    losses = {name: target_losses(m, held_out) for name, m in (("base", base), ("adapter", adapter), ("full", full))}
    for value in losses.values():
        value["combined"] = value["return"] + value["variance"]
    out: dict[str, Any] = {"n_held_out": len(held_out)}
    for target in ("return", "variance", "combined"):
        row: dict[str, Any] = {f"loss_{name}": round(float(v[target].mean()), 5) for name, v in losses.items()}
        for name in ("adapter", "full"):
            test = diebold_mariano(losses["base"][target], losses[name][target])
            row[f"gain_{name}"] = round(test.improvement, 5)
            row[f"gain_{name}_ci90"] = [round(test.ci_low, 5), round(test.ci_high, 5)]
            row[f"gain_{name}_p"] = round(test.p_value, 4)
        row["share_recovered"] = round(row["gain_adapter"] / row["gain_full"], 3) if row["gain_full"] != 0 else None
        out[target] = row
    combined = out["combined"]
    out["share_recovered"] = combined["share_recovered"]
    out["share_meaningful"] = bool(combined["gain_full"] > 0 and combined["gain_full_p"] < SIGNIFICANCE)
    return out


def phase_adapters(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Adapters of every measured pair (timed), full fine-tuning of the distinct and one pool pair, and the
    short-trained adapters that fill the server; tensors, configs and held-out windows saved for serving."""
    import torch
    from safetensors.torch import save_file

    from cyber_pipelines.models import adapters as lora
    from cyber_pipelines.models.forecaster import TrainSettings, parameter_count, predict

    settings = model_settings()
    base = load_base(workdir)
    config = lora.adapter_config(settings.adapter, base)
    full_settings = replace(settings.base, learning_rate=args.full_lr)
    per_pair: dict[str, Any] = {}
    gains: dict[str, Any] = {}
    windows: list[np.ndarray] = []
    expected: dict[str, dict[str, list[list[float]]]] = {}
    size: dict[str, Any] = {}
    gain_pairs = {DISTINCT_NAME, POOL_NAMES[0]}
    short = replace(settings.adapter_training, epochs=args.serving_epochs)
    jobs: list[tuple[str, float, TrainSettings, bool]] = [
        (pair, ar, settings.adapter_training, True) for pair, ar in pair_list(args)
    ]
    jobs += [(p, 0.0, short, False) for p in serving_extra_pairs(args)]
    for pair, ar, train_settings, measured in jobs:
        train, held_out = split_year(pair_samples(pair, ar, args))
        began, began_cpu = time.perf_counter(), time.process_time()
        model, report = lora.train_adapter(base, train, settings.adapter, train_settings)
        wall, cpu = time.perf_counter() - began, time.process_time() - began_cpu
        log(
            f"adapter {pair}: {report.seconds:.1f} s, {len(report.train_loss)} epochs"
            + ("" if measured else " (short)")
        )
        key = pair.replace("/", "-")
        save_file(lora.adapter_tensors(model), str(workdir / f"adapter-{key}.safetensors"))
        probe = held_out.x[:4]
        expected[key] = {"input": probe.tolist(), "output": predict(model, probe).tolist()}
        windows.append(held_out.x[:200])
        if not size:
            lora_only = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
            trainable = lora.trainable_parameters(model)
            size = {
                "adapter_parameters": trainable,
                "lora_parameters": lora_only,
                "head_parameters": trainable - lora_only,
                "base_parameters": parameter_count(base),
                "share": round(trainable / parameter_count(base), 5),
                "lora_share": round(lora_only / parameter_count(base), 5),
                "adapter_bytes": sum(t.numel() * t.element_size() for t in lora.adapter_tensors(model).values()),
                "rank": settings.adapter.rank,
                "target_modules": config["target_modules"],
            }
        if not measured:
            continue
        per_pair[pair] = {
            "seconds": round(wall, 2),
            "fit_seconds": round(report.seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "epochs": len(report.train_loss),
            "best_epoch": report.best_epoch,
            "n_samples": report.n_train + report.n_validation,
            "return_ar": ar,
        }
        if pair in gain_pairs:
            full, full_report = lora.train_full(base, train, full_settings)
            log(f"full fine-tuning {pair}: {full_report.seconds:.1f} s, {len(full_report.train_loss)} epochs")
            gains[pair] = {
                "return_ar": ar,
                "full_seconds": round(full_report.seconds, 2),
                "full_epochs": len(full_report.train_loss),
                **gain_report(base, model, full, held_out),
            }
            del full
        del model
    (workdir / "adapters.json").write_text(json.dumps({"config": config, "expected": expected}))
    np.save(workdir / "windows.npy", np.concatenate(windows))
    seconds = [v["seconds"] for v in per_pair.values()]
    return {
        "adapter_training": {
            "per_pair": per_pair,
            "max_seconds": max(seconds),
            "mean_seconds": round(float(np.mean(seconds)), 2),
            "threads": torch.get_num_threads(),
        },
        "adapter_size": size,
        "gain": {
            "full_fine_tuning_settings": {"learning_rate": args.full_lr, "weight_decay": full_settings.weight_decay},
            **gains,
        },
        "adapters_phase_peak_rss_mib": peak_rss_mib(),
    }


def adapter_files(workdir: Path) -> list[tuple[str, Path]]:
    paths = sorted(workdir.glob("adapter-*.safetensors"))
    return [(p.name.removeprefix("adapter-").removesuffix(".safetensors"), p) for p in paths]


def phase_serving(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """A fresh process: the base and every saved adapter in one ``AdapterServer``; latency of one window."""
    import torch
    from safetensors.torch import load_file

    from cyber_pipelines.models import adapters as lora
    from cyber_pipelines.models.forecaster import predict

    rss_start = rss_mib()
    meta = json.loads((workdir / "adapters.json").read_text())
    windows = np.load(workdir / "windows.npy")
    plain = load_base(workdir)
    server = lora.AdapterServer(load_base(workdir))
    files = adapter_files(workdir)
    for key, path in files:
        server.add(key, load_file(str(path)), meta["config"])
    keys = [key for key, _ in files]
    rss_loaded = rss_mib()
    diff = max(
        float(np.max(np.abs(server.predict(k, np.asarray(e["input"], np.float32)) - np.asarray(e["output"]))))
        for k, e in meta["expected"].items()
    )
    rng = np.random.default_rng(args.seed)

    def timed(call: Any, n: int) -> list[float]:
        rows = rng.integers(0, len(windows), n + args.warmup)
        out = []
        for i, row in enumerate(rows):
            x = windows[row : row + 1]
            began = time.perf_counter()
            call(i, x)
            out.append(time.perf_counter() - began)
        return out[args.warmup :]

    log(f"serving: {len(keys)} adapters, {args.calls} calls each way")
    switch = timed(lambda i, x: server.predict(keys[i % len(keys)], x), args.calls)
    same = timed(lambda i, x: server.predict(keys[0], x), args.calls)
    base_plain = timed(lambda i, x: predict(plain, x), args.calls)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a diagnostic: the same switching, without waiting on a second thread
    switch_one_thread = timed(lambda i, x: server.predict(keys[i % len(keys)], x), args.calls)
    torch.set_num_threads(threads)
    return {
        "adapters": len(keys),
        "adapters_trained_fully": args.pool + 1,
        "adapters_trained_short": len(keys) - args.pool - 1,
        "switch": percentiles_ms(switch),
        "same_pair": percentiles_ms(same),
        "base_plain": percentiles_ms(base_plain),
        "switch_one_thread": percentiles_ms(switch_one_thread),
        "max_abs_diff_vs_trained": diff,
        "rss_after_imports_mib": rss_start,
        "rss_after_loading_mib": rss_loaded,
        "peak_rss_mib": peak_rss_mib(),
        "threads": threads,
    }


# ---------------------------------------------------------------------------------------------------- gpu


def fit_on_device(model: Any, samples: Any, settings: Any, device: Any) -> dict[str, Any]:
    """``forecaster.fit``'s loop on ``device`` (same loss, optimizer, batches, early stopping); seconds, epochs."""
    import torch

    from cyber_pipelines.models.forecaster import sample_losses

    n_val = max(1, int(len(samples) * settings.validation_share))
    split = len(samples) - n_val
    x = torch.from_numpy(np.ascontiguousarray(samples.x, dtype=np.float32)).to(device)
    ret = torch.from_numpy(samples.ret.astype(np.float32)).to(device)
    var = torch.from_numpy(samples.var.astype(np.float32)).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    synchronize()
    began = time.perf_counter()
    best, best_state, stale, epochs = float("inf"), copy.deepcopy(model.state_dict()), 0, 0
    for _ in range(settings.epochs):
        epochs += 1
        model.train()
        order = torch.randperm(split, generator=generator).to(device)
        for start in range(0, split, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            loss = sample_losses(model(x[idx]), ret[idx], var[idx], settings.huber).mean()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            validation = float(sample_losses(model(x[split:]), ret[split:], var[split:]).mean())
        if validation < best - 1e-6:
            best, best_state, stale = validation, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= settings.patience:
                break
    model.load_state_dict(best_state)
    synchronize()
    return {"seconds": round(time.perf_counter() - began, 2), "epochs": epochs}


def phase_gpu(args: argparse.Namespace, workdir: Path, device_name: str = "cuda") -> dict[str, Any] | str:
    """Training times and switch latency on the accelerator (``device_name`` 'cpu' only to test this code)."""
    import torch
    from safetensors.torch import load_file

    from cyber_pipelines.models import adapters as lora
    from cyber_pipelines.models.forecaster import Forecaster
    from cyber_pipelines.models.samples import concat

    if device_name == "cuda" and not torch.cuda.is_available():
        return "not available"
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    settings = model_settings()
    data = [split_year(pair_samples(pair, ar, args))[0] for pair, ar in pair_list(args)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(settings.base.seed)
    base = Forecaster(data[0].x.shape[1], settings.width, settings.depth).to(device)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else device_name}
    out["base"] = fit_on_device(base, concat(data), settings.base, device)
    if cuda:
        out["base"]["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    log(f"gpu base: {out['base']}")
    per_pair = {}
    for (pair, _), train in zip(pair_list(args), data, strict=True):
        torch.manual_seed(settings.adapter_training.seed)
        model = lora.attach(base, settings.adapter).to(device)
        per_pair[pair] = fit_on_device(model, train, settings.adapter_training, device)
    out["adapter_training"] = {"per_pair": per_pair, "max_seconds": max(v["seconds"] for v in per_pair.values())}
    log(f"gpu adapters: max {out['adapter_training']['max_seconds']} s")
    # serving: the CPU-trained base and adapters, moved to the device after loading
    meta = json.loads((workdir / "adapters.json").read_text())
    server = lora.AdapterServer(load_base(workdir))
    files = adapter_files(workdir)
    for key, path in files:
        server.add(key, load_file(str(path)), meta["config"])
    assert server.model is not None
    served = server.model.to(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    names = [lora.adapter_name(key) for key, _ in files]
    windows = np.load(workdir / "windows.npy")

    def call(name: str, row: np.ndarray) -> np.ndarray:
        served.set_adapter(name)
        with torch.no_grad():
            return served(torch.from_numpy(row).to(device)).cpu().numpy()

    rng = np.random.default_rng(args.seed)
    rows = rng.integers(0, len(windows), args.calls + args.warmup)
    times = []
    for i, row in enumerate(rows):
        began = time.perf_counter()
        call(names[i % len(names)], windows[row : row + 1])
        times.append(time.perf_counter() - began)
    out["serving"] = {"adapters": len(names), "switch": percentiles_ms(times[args.warmup :])}
    if cuda:
        out["serving"]["peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


# ---------------------------------------------------------------------------------------------------- main

PHASES: dict[str, Callable[[argparse.Namespace, Path], Any]] = {
    "base": phase_base,
    "adapters": phase_adapters,
    "serving": phase_serving,
    "gpu": phase_gpu,
}


def run_phase(name: str, argv: list[str], workdir: Path) -> Any:
    """Run one phase in a fresh Python process (its own peak RSS); its result is the last stdout line."""
    log(f"phase {name}")
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--phase", name, "--workdir", str(workdir)],
        stdout=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"phase {name} failed with exit code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=4, help="pool pairs (return_ar 0)")
    parser.add_argument("--ar", type=float, default=0.3, help="AR(1) coefficient of the distinct pair's returns")
    parser.add_argument("--days", type=int, default=456, help="simulated days (a week of warm-up, a year, held-out)")
    parser.add_argument("--seed", type=int, default=7, help="the simulation's seed")
    parser.add_argument("--full-lr", type=float, default=3e-4, help="full fine-tuning's learning rate (the base's)")
    parser.add_argument("--serving-pairs", type=int, default=15, help="adapters in the serving process")
    parser.add_argument("--serving-epochs", type=int, default=2, help="max epochs of the extra serving adapters")
    parser.add_argument("--calls", type=int, default=2000, help="timed predictions per latency figure")
    parser.add_argument("--warmup", type=int, default=200, help="untimed predictions before each latency figure")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per phase (0: torch's default)")
    parser.add_argument("--skip-gpu", action="store_true", help="do not look for a GPU")
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--accelerator", default="cuda", help=argparse.SUPPRESS)  # cpu: test the gpu phase's code
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pool < 1 or args.pool > len(POOL_NAMES):
        parser.error(f"--pool must be in [1, {len(POOL_NAMES)}]")
    return args


def main(argv: list[str] | None = None) -> None:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parse(raw)
    if args.phase:
        phase = PHASES[args.phase]
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        load = round(os.getloadavg()[0], 2)
        result = phase_gpu(args, args.workdir, args.accelerator) if args.phase == "gpu" else phase(args, args.workdir)
        if isinstance(result, dict):
            result["loadavg_1m_at_start"] = load
        print(json.dumps(result), flush=True)
        return
    began, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        workdir = Path(tmp)
        base = run_phase("base", raw, workdir)
        adapters = run_phase("adapters", raw, workdir)
        serving = run_phase("serving", raw, workdir)
        gpu = "skipped" if args.skip_gpu else run_phase("gpu", raw, workdir)
    training, size, switch = adapters["adapter_training"], adapters["adapter_size"], serving["switch"]
    peak = max(base["peak_rss_mib"], serving["peak_rss_mib"])
    result = {
        "benchmark": "lora_adapters",
        "settings": {
            "pool_pairs": args.pool,
            "distinct_pair": DISTINCT_NAME,
            "distinct_ar": args.ar,
            "days": args.days,
            "seed": args.seed,
            "origin": ORIGIN.isoformat(),
            "training_samples_per_pair": YEAR_HOURS,
            "width": 1024,
            "depth": 1,
            "serving_pairs": args.serving_pairs,
            "serving_epochs": args.serving_epochs,
            "calls": args.calls,
            "torch_threads": args.threads or "default",
            "warmup": args.warmup,
            "peak_memory_method": "ru_maxrss of a fresh process per phase (interpreter + imports + data included)",
        },
        "targets": TARGETS,
        "cpu": {
            "base": base,
            "adapter_training": training,
            "adapter_size": size,
            "gain": adapters["gain"],
            "serving": serving,
            "adapters_phase_peak_rss_mib": adapters["adapters_phase_peak_rss_mib"],
        },
        "gpu": gpu,
        "meets_adapter_seconds": training["max_seconds"] <= TARGETS["adapter_seconds"],
        "meets_adapter_share": size["share"] <= TARGETS["adapter_share"],
        "meets_switch_p99": switch["p99_ms"] <= TARGETS["switch_p99_ms"],
        "meets_memory": peak < TARGETS["memory_mib"],
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "loadavg_5m_before_after": [round(load_before[1], 2), round(os.getloadavg()[1], 2)],
        },
        "seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
