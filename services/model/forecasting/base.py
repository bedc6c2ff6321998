"""What every forecasting algorithm is: typed, validated parameters, a `Forecaster` that fits on a price series and
forecasts a horizon with a prediction interval from the end of any later history, and a byte artifact.

Conventions:
- Inputs are closes (float64, > 0, ascending in time). Every model works on log prices; a `Forecast` is in price
  units. For the models with a normal predictive distribution on the log scale the point forecast is exp(mean of
  log price), the median of the log-normal predictive distribution (the point that minimises the expected absolute
  error, which is what MAE and MASE score), and the interval is exp(mean ± z·sd) with z the normal quantile of
  (1 + level) / 2.
- `forecast(history, ...)` forecasts from the END of `history`; the history may extend past the training data and
  the model conditions on it without refitting its parameters.
- Artifacts are `.npz` bytes (loaded with allow_pickle=False): a JSON `meta` entry (format, algorithm, parameters,
  scalars) and float64 arrays. No pickled objects, so loading an artifact never runs code; written with fixed
  entry times, so the same model gives the same bytes (and checksum).
"""

from __future__ import annotations

import io
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from statistics import NormalDist
from typing import Any, ClassVar, Self, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

from services.core import parameters
from services.core.parameters import Param, Params, ParamValue, resolve_params

Array = npt.NDArray[np.float64]

F = TypeVar("F", bound=Callable[..., Any])

ARTIFACT_FORMAT = "bullant.forecaster"
ARTIFACT_VERSION = 1


def njit(function: F) -> F:
    """numba.njit(cache=True) keeping the Python signature for mypy (numba ships no usable types)."""
    return cast(F, numba.njit(cache=True)(function))


AlgorithmParam = Param


integer = parameters.integer
number = parameters.number
boolean = parameters.boolean


class Algorithm(IntEnum):
    """Numbers of bullant.model.v1.Algorithm."""

    NAIVE = 1
    DRIFT = 2
    ARIMA = 3
    LSTM = 4
    KALMAN = 5
    ENSEMBLE = 6


class FitStage(IntEnum):
    """The stages a fit reports, numbered as bullant.model.v1.TrainingStage."""

    PREPARING = 3
    FITTING = 4
    EVALUATING = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class FitProgress:
    """One progress report of a fit. `fraction` is the share of the fit done, in [0, 1]; `epoch` counts from 1 and
    `epoch_count` is the maximum (0 for algorithms without epochs); losses are absent when not applicable."""

    stage: FitStage
    message: str
    fraction: float
    epoch: int | None = None
    epoch_count: int = 0
    loss: float | None = None
    validation_loss: float | None = None


ProgressCallback = Callable[[FitProgress], None]


def report(progress: ProgressCallback | None, stage: FitStage, message: str, fraction: float, **extra: Any) -> None:
    """Calls `progress` when given (whatever it raises, e.g. a cancellation, propagates)."""
    if progress is not None:
        progress(FitProgress(stage=stage, message=message, fraction=min(1.0, max(0.0, fraction)), **extra))


@dataclass(frozen=True, slots=True)
class Forecast:
    """A forecast of the next `horizon` closes: the point path and the bounds of the central prediction interval of
    nominal `level`, in price units, one value per future bar."""

    mean: Array
    lower: Array
    upper: Array
    level: float

    def __post_init__(self) -> None:
        if not (self.mean.shape == self.lower.shape == self.upper.shape) or self.mean.ndim != 1:
            raise ValueError("mean, lower and upper must be 1-D arrays of the same length")

    @property
    def horizon(self) -> int:
        """Number of forecast bars."""
        return int(self.mean.shape[0])


class ArtifactError(ValueError):
    """An artifact that cannot be read (truncated, of another algorithm or format, missing entries)."""


def z_value(level: float) -> float:
    """The standard normal quantile of (1 + level) / 2: the half-width of a central `level` interval in sds."""
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def check_forecast_request(horizon: int, level: float) -> None:
    """ValueError unless horizon >= 1 and 0 < level < 1."""
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1, got {horizon}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def log_prices(closes: npt.ArrayLike, *, minimum: int = 2, what: str = "closes") -> Array:
    """The log of a 1-D series of positive finite closes with at least `minimum` values (ValueError otherwise)."""
    values = np.asarray(closes, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{what} must be 1-D")
    if values.shape[0] < minimum:
        raise ValueError(f"{what} need at least {minimum} values, got {values.shape[0]}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0.0):
        raise ValueError(f"{what} must be finite and positive")
    return np.log(values)


def lognormal_forecast(mu: Array, sd: Array, level: float) -> Forecast:
    """The forecast of a normal predictive distribution on the log scale (means `mu`, sds `sd`), in prices."""
    z = z_value(level)
    return Forecast(mean=np.exp(mu), lower=np.exp(mu - z * sd), upper=np.exp(mu + z * sd), level=level)


def pack_artifact(algorithm: Algorithm, meta: Mapping[str, Any], arrays: Mapping[str, npt.ArrayLike]) -> bytes:
    """The .npz artifact bytes: `meta` as JSON (with format, version and algorithm) and the arrays."""
    header = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "algorithm": int(algorithm), **meta}
    entries: dict[str, Any] = {name: np.asarray(value) for name, value in arrays.items()}
    entries["meta"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    # The .npz layout written by hand with fixed entry times, so equal models give byte-equal artifacts.
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            content = io.BytesIO()
            np.lib.format.write_array(content, entries[name], allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content.getvalue())
    return buffer.getvalue()


def artifact_algorithm(data: bytes) -> Algorithm:
    """The algorithm an artifact was written by (ArtifactError when it is not a forecaster artifact)."""
    return Algorithm(int(unpack_artifact(data)[0]["algorithm"]))


def unpack_artifact(
    data: bytes, expected: Algorithm | None = None
) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """The meta and arrays of an artifact (ArtifactError when unreadable or of another algorithm)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: np.array(archive[name]) for name in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"unreadable forecaster artifact: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError("not a forecaster artifact")
    if meta.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"unsupported artifact version {meta.get('version')}")
    try:
        algorithm = Algorithm(int(meta["algorithm"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError("artifact names no known algorithm") from exc
    if expected is not None and algorithm is not expected:
        raise ArtifactError(f"artifact of {algorithm.name}, expected {expected.name}")
    return meta, arrays


class Forecaster(ABC):
    """A forecasting model of one algorithm with resolved parameters: `fit` once on a training series, then
    `forecast` from the end of any history (training data plus later closes) without refitting."""

    algorithm: ClassVar[Algorithm]
    parameters: ClassVar[tuple[AlgorithmParam, ...]] = ()

    def __init__(self, params: Params) -> None:
        self.params: dict[str, ParamValue] = dict(params)

    @classmethod
    def resolve(cls, given: Params | None = None, *, field: str = "parameters") -> dict[str, ParamValue]:
        """The parameters with defaults filled in (InvalidArgument: UNKNOWN_PARAMETER, INVALID_PARAMETER)."""
        return resolve_params(cls.parameters, given or {}, owner=cls.algorithm.name.lower(), field=field)

    @classmethod
    @abstractmethod
    def min_training_bars(cls, params: Params) -> int:
        """Fewest training closes `fit` accepts with these (resolved) parameters."""

    @abstractmethod
    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Fits on a training series of closes (> 0). `progress` is called with FitProgress reports; an exception
        it raises (a cancellation) propagates and leaves the model unfitted."""

    @abstractmethod
    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """The next `horizon` closes after the end of `history` with a central prediction interval of `level`."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The fitted model as artifact bytes."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """A fitted model from artifact bytes (ArtifactError when they are not this algorithm's)."""

    def _training_log_prices(self, closes: Array) -> Array:
        """Checks a training series and returns its log prices."""
        return log_prices(closes, minimum=self.min_training_bars(self.params), what="training closes")


class NotFittedError(RuntimeError):
    """forecast or to_bytes on a model that was not fitted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlgorithmDef:
    """One algorithm of the catalogue: what ListAlgorithms shows and how to build, restore and size it."""

    algorithm: Algorithm
    display_name: str
    description: str
    baseline: bool
    forecaster: type[Forecaster]

    @property
    def params(self) -> tuple[AlgorithmParam, ...]:
        """The parameters with types, defaults and bounds."""
        return self.forecaster.parameters

    def resolve(self, given: Params, *, field: str = "parameters") -> dict[str, ParamValue]:
        """Every parameter's value with defaults filled in (InvalidArgument: UNKNOWN_PARAMETER, INVALID_PARAMETER)."""
        return self.forecaster.resolve(given, field=field)

    def create(self, given: Params | None = None) -> Forecaster:
        """An unfitted forecaster with the given parameters resolved."""
        return self.forecaster(self.resolve(given or {}))

    def load(self, data: bytes) -> Forecaster:
        """A fitted forecaster from artifact bytes."""
        return self.forecaster.from_bytes(data)

    def min_training_bars(self, given: Params | None = None) -> int:
        """Fewest training closes with the given parameters (defaults when none), held-out tail excluded."""
        return self.forecaster.min_training_bars(self.resolve(given or {}))
