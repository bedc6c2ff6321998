"""LSTM on windowed log returns (torch, CPU). torch is imported inside the functions that need it, so importing
this module (and the catalogue) does not load torch.

Fit:
- log returns of the training closes; the last 15 % of them are the validation split. The normalisation (mean and
  sd of the returns) is fitted on the part before the validation split only.
- samples: `window` normalised returns → the next one; one LSTM layer of `hidden_size` units and a linear head on
  its last output, mean squared error, Adam with `learning_rate`, mini-batches of `batch_size` shuffled by a seeded
  generator, gradient norm clipped at 1.
- at most `epochs` epochs with early stopping: training stops when the validation loss has not improved for
  `patience` epochs and the weights of the best validation epoch are kept.
- reproducible: torch.manual_seed(seed), a seeded shuffle, deterministic algorithms and one thread during the fit,
  so the same seed and data give the same weights and forecasts.

Forecast: from the last `window` returns of the history (later closes included, no refit), one-step predictions are
iterated, each fed back as the newest input, giving the mean log path. Interval: the sd of the one-step residuals
on the validation split (in log-return units, the best epoch's weights), scaled by sqrt(h) at step h as for a
random walk of those residuals, with the normal quantile, exponentiated. This is an approximation: it ignores the
correlation of iterated errors and the parameter uncertainty.

Cost: seconds on 2,000 bars with the defaults (each epoch is a few dozen mini-batches of 30-step sequences).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from services.core.parameters import Params
from services.model.forecasting.base import (
    Algorithm,
    Array,
    FitStage,
    Forecast,
    Forecaster,
    NotFittedError,
    ProgressCallback,
    check_forecast_request,
    integer,
    log_prices,
    lognormal_forecast,
    number,
    pack_artifact,
    report,
    unpack_artifact,
)

if TYPE_CHECKING:
    import torch

VALIDATION_FRACTION = 0.15
MIN_VALIDATION_SAMPLES = 20
_STATE_PREFIX = "state."


class FitDiverged(ArithmeticError):
    """The training loss became non-finite (reason DIVERGED)."""


def _build_network(hidden_size: int) -> torch.nn.Module:
    """The network: LSTM(1 → hidden) and a linear head on the last output."""
    import torch  # noqa: PLC0415 - torch loads lazily

    class Network(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(input_size=1, hidden_size=hidden_size, num_layers=1, batch_first=True)
            self.head = torch.nn.Linear(hidden_size, 1)

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            output, _ = self.lstm(inputs.unsqueeze(-1))
            result: torch.Tensor = self.head(output[:, -1, :]).squeeze(-1)
            return result

    return Network()


def _windows(series: Array, window: int) -> tuple[Array, Array]:
    """Inputs (n - window, window) and targets (n - window,) of a normalised return series."""
    view = np.lib.stride_tricks.sliding_window_view(series, window + 1)
    return np.array(view[:, :window], dtype=np.float64), np.array(view[:, window], dtype=np.float64)


def _train(
    network: torch.nn.Module,
    training: tuple[Array, Array],
    validation: tuple[Array, Array],
    params: Params,
    *,
    seed: int,
    progress: ProgressCallback | None,
) -> tuple[dict[str, torch.Tensor], float, int]:
    """Adam with early stopping: the best validation epoch's weights, its loss and the number of epochs run."""
    import torch  # noqa: PLC0415 - torch loads lazily

    epochs, patience, batch = int(params["epochs"]), int(params["patience"]), int(params["batch_size"])
    optimiser = torch.optim.Adam(network.parameters(), lr=float(params["learning_rate"]))
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = (torch.from_numpy(item).float() for item in training)
    valid_inputs, valid_targets = (torch.from_numpy(item).float() for item in validation)
    best_loss, best_state, stale, epoch = math.inf, None, 0, 0
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(inputs.shape[0], generator=generator)
        total = 0.0
        for start in range(0, inputs.shape[0], batch):
            chosen = order[start : start + batch]
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(network(inputs[chosen]), targets[chosen])
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimiser.step()
            total += float(loss.item()) * int(chosen.shape[0])
        train_loss = total / inputs.shape[0]
        network.eval()
        with torch.no_grad():
            valid_loss = float(torch.nn.functional.mse_loss(network(valid_inputs), valid_targets).item())
        if not (math.isfinite(train_loss) and math.isfinite(valid_loss)):
            raise FitDiverged(f"non-finite loss at epoch {epoch}")
        if valid_loss < best_loss:
            best_loss, stale = valid_loss, 0
            best_state = {name: value.detach().clone() for name, value in network.state_dict().items()}
        else:
            stale += 1
        report(
            progress,
            FitStage.FITTING,
            f"epoch {epoch}/{epochs}, early stopping patience {stale}/{patience}",
            epoch / epochs,
            epoch=epoch,
            epoch_count=epochs,
            loss=train_loss,
            validation_loss=valid_loss,
        )
        if stale >= patience:
            break
    assert best_state is not None
    return best_state, best_loss, epoch


class LstmForecaster(Forecaster):
    """LSTM on windowed normalised log returns (see the module docstring)."""

    algorithm = Algorithm.LSTM
    parameters = (
        integer("window", "Log returns the network sees per prediction.", 30, 5, 200, unit="bars"),
        integer("hidden_size", "LSTM units.", 32, 4, 256),
        integer("epochs", "Maximum training epochs (early stopping may end sooner).", 50, 1, 500),
        integer("patience", "Epochs without validation improvement before stopping.", 5, 1, 50),
        number("learning_rate", "Adam learning rate.", 0.001, 1e-5, 0.1),
        integer("batch_size", "Samples per mini-batch.", 64, 8, 1024),
    )

    def __init__(self, params: Params) -> None:
        super().__init__(params)
        self._state: dict[str, Array] | None = None
        self._center = 0.0
        self._scale = 1.0
        self._residual_sd = 0.0
        self.epochs_run = 0
        self._network: Any = None

    @property
    def window(self) -> int:
        """Input length in returns."""
        return int(self.params["window"])

    @classmethod
    def min_training_bars(cls, params: Params) -> int:
        """Enough closes for a window and a validation split of at least 20 samples (about 135 samples)."""
        window = int(params["window"])
        samples = math.ceil(MIN_VALIDATION_SAMPLES / VALIDATION_FRACTION)
        return window + samples + 1

    def fit(self, closes: Array, *, seed: int = 0, progress: ProgressCallback | None = None) -> None:
        """Trains with early stopping (see the module docstring)."""
        import torch  # noqa: PLC0415 - torch loads lazily

        report(progress, FitStage.PREPARING, "building windows of normalised log returns", 0.0)
        returns = np.diff(self._training_log_prices(closes))
        window = self.window
        split = round(returns.shape[0] * (1.0 - VALIDATION_FRACTION))
        center = float(np.mean(returns[:split]))
        scale = float(np.std(returns[:split]))
        if not scale > 0.0:
            raise ValueError("training closes do not vary")
        normalised = (returns - center) / scale
        train_x, train_y = _windows(normalised[:split], window)
        # Validation targets are the returns after the split; their inputs may reach back into the training part.
        valid_x, valid_y = _windows(normalised[split - window :], window)

        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            torch.manual_seed(seed)
            network = _build_network(int(self.params["hidden_size"]))
            best_state, best_loss, epoch = _train(
                network, (train_x, train_y), (valid_x, valid_y), self.params, seed=seed, progress=progress
            )
            network.load_state_dict(best_state)
            network.eval()
            with torch.no_grad():
                predicted = network(torch.from_numpy(valid_x).float()).numpy().astype(np.float64)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)
        residuals = (predicted - valid_y) * scale
        report(progress, FitStage.FITTING, f"stopped after {epoch} epochs", 1.0, validation_loss=best_loss)
        self._state = {name: value.numpy().astype(np.float64) for name, value in best_state.items()}
        self._center, self._scale = center, scale
        self._residual_sd = float(np.sqrt(np.mean(residuals**2)))
        self.epochs_run = epoch
        self._network = network

    def _module(self) -> Any:
        """The torch network with the fitted weights, built on first use."""
        import torch  # noqa: PLC0415 - torch loads lazily

        if self._state is None:
            raise NotFittedError("lstm is not fitted")
        if self._network is None:
            network = _build_network(int(self.params["hidden_size"]))
            network.load_state_dict({name: torch.from_numpy(value).float() for name, value in self._state.items()})
            network.eval()
            self._network = network
        return self._network

    def forecast(self, history: Array, horizon: int, level: float = 0.8) -> Forecast:
        """Iterated one-step predictions from the last window of `history` (see the module docstring)."""
        import torch  # noqa: PLC0415 - torch loads lazily

        check_forecast_request(horizon, level)
        network = self._module()
        x = log_prices(history, minimum=self.window + 1, what="history")
        inputs = (np.diff(x[-(self.window + 1) :]) - self._center) / self._scale
        window = torch.from_numpy(inputs).float().unsqueeze(0)
        steps = np.empty(horizon)
        # One sequence at a time: more threads only add synchronisation (and contention in a busy process).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                for step in range(horizon):
                    predicted = network(window)
                    steps[step] = float(predicted.item())
                    window = torch.cat([window[:, 1:], predicted.reshape(1, 1)], dim=1)
        finally:
            torch.set_num_threads(threads)
        mu = x[-1] + np.cumsum(steps * self._scale + self._center)
        sd = self._residual_sd * np.sqrt(np.arange(1, horizon + 1, dtype=np.float64))
        return lognormal_forecast(mu, sd, level)

    def to_bytes(self) -> bytes:
        """The weights (float64 arrays of the state dict), the normalisation and the residual sd."""
        if self._state is None:
            raise NotFittedError("lstm is not fitted")
        meta = {
            "params": self.params,
            "center": self._center,
            "scale": self._scale,
            "residual_sd": self._residual_sd,
            "epochs_run": self.epochs_run,
            "state_keys": sorted(self._state),
        }
        arrays = {_STATE_PREFIX + name: value for name, value in self._state.items()}
        return pack_artifact(self.algorithm, meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The model written by to_bytes (the torch network is built on the first forecast)."""
        meta, arrays = unpack_artifact(data, cls.algorithm)
        model = cls(meta["params"])
        model._center, model._scale = float(meta["center"]), float(meta["scale"])
        model._residual_sd = float(meta["residual_sd"])
        model.epochs_run = int(meta["epochs_run"])
        model._state = {name: arrays[_STATE_PREFIX + name] for name in meta["state_keys"]}
        return model
