"""Learning-rate schedules: the step size as a function of the epoch and of the SGD step count.

"adaptive" also depends on how training goes: the loop divides its rate by 5 each time the monitored metric
plateaus (see :class:`~linclass_gpu.training.PlateauRule`); here it is the constant it starts from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "exponential", "invscaling", "optimal", "adaptive")


@dataclass(frozen=True)
class LearningRateSchedule:
    """``η(epoch, step)`` for one of the :data:`SCHEDULES`.

    Parameters
    ----------
    kind : {"constant", "step", "exponential", "invscaling"}
        ``constant``: ``η0``. ``step``: ``η0·γ^⌊epoch / step_size⌋`` (PyTorch's StepLR).
        ``exponential``: ``η0·γ^epoch`` (ExponentialLR). ``invscaling``: ``η0 / (t + 1)^power_t`` with ``t`` the
        number of SGD steps taken so far (scikit-learn's "invscaling", counted in steps rather than samples).
        ``optimal``: scikit-learn's ``1 / (α (t0 + t))`` with ``t`` the SGD steps taken so far (scikit-learn
        counts samples because it steps once per sample; a minibatch step is one step) and ``t0`` chosen by
        Bottou's heuristic so that the first rate is ``α^(−1/4)``; ``η0`` is not used. ``adaptive``: ``η0``, divided
        by 5 by the training loop at each plateau.
    initial : float
        ``η0 > 0``.
    gamma : float
        Decay factor in (0, 1] for ``step`` and ``exponential``.
    step_size : int
        Epochs between decays for ``step``.
    power_t : float
        Exponent for ``invscaling``.
    alpha : float
        The L2 strength, which sets the scale of ``optimal`` (must then be > 0).
    fixed_epoch : int, optional
        The epoch to use instead of the one the loop passes (a ``partial_fit`` call that is one chunk of an epoch).
    floor : float
        No decaying schedule goes below this rate (``min_learning_rate``): with a floor, more epochs keep moving the
        weights, and the averaged weights (``average``) keep approaching the optimum instead of freezing wherever
        the decay left them.
    """

    kind: str = "constant"
    initial: float = 0.1
    gamma: float = 0.5
    step_size: int = 5
    power_t: float = 0.5
    alpha: float = 0.0
    fixed_epoch: int | None = None
    floor: float = 0.0

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
        if not (self.floor >= 0 and self.floor < float("inf")):
            raise ValueError(f"min_learning_rate must be a finite number >= 0, got {self.floor!r}")
        if self.kind == "optimal" and not self.alpha > 0:
            raise ValueError("schedule='optimal' scales with alpha, which must then be > 0")

    def __call__(self, epoch: int, step: int) -> float:
        """The learning rate for SGD step ``step`` (counted from 0 over the whole fit) in epoch ``epoch`` (from 0)."""
        return max(self._decayed(epoch, step), min(self.floor, self.initial))

    def _decayed(self, epoch: int, step: int) -> float:
        epoch = epoch if self.fixed_epoch is None else self.fixed_epoch
        if self.kind == "step":
            return self.initial * self.gamma ** (epoch // self.step_size)
        if self.kind == "exponential":
            return self.initial * self.gamma ** epoch
        if self.kind == "invscaling":
            return self.initial / (step + 1) ** self.power_t
        if self.kind == "optimal":
            # With typw = α^(−1/4), t0 = 1/(typw·α) makes the first rate 1/(α·t0) = typw (scikit-learn's choice).
            t0 = 1.0 / (math.sqrt(1.0 / math.sqrt(self.alpha)) * self.alpha)
            return 1.0 / (self.alpha * (t0 + step))
        return self.initial
