"""Learning-rate schedules: the step size as a function of the epoch and of the SGD step count."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULES = ("constant", "step", "exponential", "invscaling")


@dataclass(frozen=True)
class LearningRateSchedule:
    """``η(epoch, step)`` for one of the :data:`SCHEDULES`.

    Parameters
    ----------
    kind : {"constant", "step", "exponential", "invscaling"}
        ``constant``: ``η0``. ``step``: ``η0·γ^⌊epoch / step_size⌋`` (PyTorch's StepLR).
        ``exponential``: ``η0·γ^epoch`` (ExponentialLR). ``invscaling``: ``η0 / (t + 1)^power_t`` with ``t`` the
        number of SGD steps taken so far (scikit-learn's "invscaling", counted in steps rather than samples).
    initial : float
        ``η0 > 0``.
    gamma : float
        Decay factor in (0, 1] for ``step`` and ``exponential``.
    step_size : int
        Epochs between decays for ``step``.
    power_t : float
        Exponent for ``invscaling``.
    """

    kind: str = "constant"
    initial: float = 0.1
    gamma: float = 0.5
    step_size: int = 5
    power_t: float = 0.5

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.kind!r}")
        if not self.initial > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.initial!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if int(self.step_size) != self.step_size or self.step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {self.step_size!r}")
        if not self.power_t >= 0:
            raise ValueError(f"power_t must be >= 0, got {self.power_t!r}")

    def __call__(self, epoch: int, step: int) -> float:
        """The learning rate for SGD step ``step`` (counted from 0 over the whole fit) in epoch ``epoch`` (from 0)."""
        if self.kind == "step":
            return self.initial * self.gamma ** (epoch // self.step_size)
        if self.kind == "exponential":
            return self.initial * self.gamma ** epoch
        if self.kind == "invscaling":
            return self.initial / (step + 1) ** self.power_t
        return self.initial
