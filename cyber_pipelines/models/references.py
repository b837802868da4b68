"""What a forecaster must beat on the same held-out samples, and the losses it is judged by.

Returns: the zero forecast and the historical mean (of the training period's hourly log returns).
Variance: GARCH(1,1) (``arch``, fitted on the training period's returns, then filtered forward with fixed
parameters, so each forecast uses only returns up to its bar) and HAR-RV (Corsi 2009) on the hourly
grid: OLS of the next horizon's realized variance on the last hour's, the last day's and the last week's
mean squared returns, fitted on the training samples. All in the samples' standardized units.

Losses: MSE and rank information coefficient for returns; MSE and QLIKE (``log h + y / h``) for variance.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import polars as pl
from scipy.stats import spearmanr

from cyber_pipelines.models.samples import FEATURES_PER_BAR, Samples

VAR_FLOOR = 1e-4
HAR_FLOOR_SHARE = 0.1  # standardized variance forecasts are floored here (QLIKE needs h > 0)


def _last_returns(samples: Samples, bars: int) -> np.ndarray:
    """The standardized log returns of the last ``bars`` bars of each sample's window (n, bars), oldest first."""
    length = (samples.x.shape[1] - 3) // FEATURES_PER_BAR
    cols = [FEATURES_PER_BAR * i for i in range(length - min(bars, length), length)]
    return samples.x[:, cols].astype(np.float64)


def _har_design(samples: Samples) -> np.ndarray:
    last = _last_returns(samples, 24) ** 2
    # the weekly component is the scale itself: 1 in standardized units, i.e. the intercept
    return np.column_stack([np.ones(len(samples)), last[:, -1], last.mean(axis=1)])


def har_rv(train: Samples, evaluate: Samples) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(_har_design(train), train.var, rcond=None)
    # a linear model can forecast a variance near 0 or below: floor it at a tenth of the training mean
    return np.maximum(_har_design(evaluate) @ coef, HAR_FLOOR_SHARE * float(np.mean(train.var)))


def garch_11(candles: pl.DataFrame, train_end: datetime, evaluate: Samples) -> np.ndarray:
    """GARCH(1,1) forecasts of each evaluated sample's next-horizon variance, fitted on returns before ``train_end``."""
    from arch import arch_model

    frame = candles.sort("timestamp")
    ts = frame["timestamp"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
    r = np.diff(np.log(frame["close"].cast(pl.Float64).to_numpy()), prepend=np.nan)
    r = np.nan_to_num(r) * 100.0  # percent: arch's optimizer is scaled for it
    last_obs = int(np.searchsorted(ts, np.datetime64(train_end.replace(tzinfo=None), "us")))
    if last_obs < 100:
        raise ValueError(f"{evaluate.pair}: {last_obs} returns before {train_end} are too few for GARCH(1,1)")
    model = arch_model(pd.Series(r), mean="Zero", vol="GARCH", p=1, q=1, dist="normal", rescale=False)
    fitted = model.fit(last_obs=last_obs, disp="off", show_warning=False)
    positions = np.searchsorted(ts, evaluate.timestamp)
    if len(positions) == 0:
        return np.zeros(0)
    forecast = fitted.forecast(horizon=evaluate.horizon, start=int(positions.min()), reindex=False)
    table = forecast.variance.to_numpy().sum(axis=1)  # the horizon's variance, one row per origin from start
    raw = table[positions - positions.min()] / 100.0**2
    return np.maximum(raw / (evaluate.scale**2 * evaluate.horizon), VAR_FLOOR)


def historical_mean(train: Samples, evaluate: Samples) -> np.ndarray:
    hourly = float(np.mean(train.raw_return(train.ret))) / train.horizon
    return hourly * evaluate.horizon / (evaluate.scale * np.sqrt(evaluate.horizon))


def return_scores(forecast: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    forecast, realized = np.asarray(forecast, float), np.asarray(realized, float)
    ic = float("nan") if np.ptp(forecast) == 0 else float(spearmanr(forecast, realized).statistic)
    return {"mse": float(np.mean((realized - forecast) ** 2)), "ic": ic}


def variance_scores(forecast: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    h, y = np.maximum(np.asarray(forecast, float), VAR_FLOOR), np.asarray(realized, float)
    return {"mse": float(np.mean((y - h) ** 2)), "qlike": float(np.mean(np.log(h) + y / h))}


def compare(
    model_forecasts: dict[str, tuple[np.ndarray, np.ndarray]],
    candles: pl.DataFrame,
    train: Samples,
    train_end: datetime,
    evaluate: Samples,
) -> pl.DataFrame:
    """One row per forecaster with its held-out losses: the models given, then the references (a return
    reference has no variance figures and a variance reference no return figures).

    ``model_forecasts``: name -> (standardized return forecast, standardized variance forecast).
    """
    rows = [{"forecaster": name, **_returns(ret, evaluate), **_variance(var, evaluate)} for name, (ret, var) in
            model_forecasts.items()]  # fmt: skip
    rows.append({"forecaster": "zero return", **_returns(np.zeros(len(evaluate)), evaluate)})
    rows.append({"forecaster": "historical mean", **_returns(historical_mean(train, evaluate), evaluate)})
    rows.append({"forecaster": "GARCH(1,1)", **_variance(garch_11(candles, train_end, evaluate), evaluate)})
    rows.append({"forecaster": "HAR-RV", **_variance(har_rv(train, evaluate), evaluate)})
    schema = {"forecaster": pl.String, **dict.fromkeys(COLUMNS, pl.Float64)}
    return pl.DataFrame(rows, schema=schema)


COLUMNS = ("return_mse", "return_ic", "variance_mse", "variance_qlike")


def _returns(ret: np.ndarray, evaluate: Samples) -> dict[str, float]:
    scores = return_scores(ret, evaluate.ret)
    return {"return_mse": scores["mse"], "return_ic": scores["ic"]}


def _variance(var: np.ndarray, evaluate: Samples) -> dict[str, float]:
    scores = variance_scores(var, evaluate.var)
    return {"variance_mse": scores["mse"], "variance_qlike": scores["qlike"]}
