"""The entropy controller: once per training step it reads an entropy statistic and decides
the temperature, k_max and halving (or the weight alpha) of the next step's regulariser.

Timing (see docs/CONTROLLER.md)::

    controller = aepo.Controller({"controller": {"target": 0.6}})
    d = controller.decision()                     # step 0; before any observation: T_high
    for step in range(num_steps):
        ...                                # draw regulariser rollouts at d.temperature,
                                           # select min(d.k_max, n_pos), halve if d.halve
        d = controller.step(nll=statistic_of_this_update, step=step)   # decision for step + 1
"""
import ctypes
import json
import math
import operator
import threading
from typing import List, NamedTuple, Optional

from . import _lib
from .errors import DTypeError, InvalidValueError, StateError
from ._deprecated import module_getattr as _module_getattr

STATISTIC_NLL = 0
STATISTIC_ENTROPY = 1
STEP_NEXT = -1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1


def _names(fn, count):
    return [fn(i).decode() for i in range(count)]


_MODE_NAMES = _names(_lib.lib.aepo_controller_mode_name, 2)
# The config's older spelling of a statistic -> its name.
_STATISTIC_ALIASES = {"exact": "entropy"}
_REASON_NAMES = _names(_lib.lib.aepo_controller_reason_name, 9)


class Estimate(NamedTuple):
    """The self-tuning controller's view of the loop, for logging (adaptive, tuning "auto").

    ``gain`` (b) is the statistic's change per step per unit of T - 1 and ``same_step`` (c)
    its jump within the step; ``delay`` the steps between a decision and its effect;
    ``process_noise`` and ``measurement_noise`` standard deviations in nats; ``horizon`` the
    steps beyond the delay the law aims ahead, ``feedback`` its proportional gain in
    temperature per nat, and ``confidence`` b / (b + 2 sd(b)) in (0, 1].
    """

    gain: float
    same_step: float
    delay: int
    process_noise: float
    measurement_noise: float
    horizon: float
    feedback: float
    confidence: float


class Decision(NamedTuple):
    """What the trainer should do in training step ``step``.

    ``alpha`` is the regulariser weight for ``combine = "weighted"`` when the controller
    drives it (adaptive mode, actuator "alpha"), and None otherwise (use regularizer.alpha).
    ``mode`` is "bang_bang" or "adaptive"; ``reason`` is one of "initial",
    "at_or_below_target", "above_target", "hysteresis_hold", "tracking", "saturated_high",
    "saturated_low", "rate_limited", "unreachable". ``estimate`` is the self-tuning
    controller's :class:`Estimate`, or None in other modes and before the first observation.
    """

    step: int
    temperature: float
    k_max: int
    halve: bool
    alpha: Optional[float]
    target: float
    statistic: float
    smoothed: float
    mode: str
    reason: str
    estimate: Optional[Estimate] = None

    @classmethod
    def _from_c(cls, d):
        alpha = None if math.isnan(d.alpha) else d.alpha
        mode = _MODE_NAMES[d.mode] if 0 <= d.mode < len(_MODE_NAMES) else f"unknown({d.mode})"
        reason = _REASON_NAMES[d.reason] if 0 <= d.reason < len(_REASON_NAMES) else f"unknown({d.reason})"
        est = None
        if d.est_delay >= 0:
            est = Estimate(d.est_gain, d.est_same_step, d.est_delay, d.est_process_noise, d.est_measurement_noise,
                           d.est_horizon, d.est_feedback, d.est_confidence)
        return cls(d.step, d.temperature, d.k_max, bool(d.halve), alpha, d.target, d.statistic, d.smoothed,
                   mode, reason, est)


def _as_float(x, name):
    if isinstance(x, (str, bytes)):
        raise DTypeError(f"{name}: expected a number, got {type(x).__name__}", argument=name)
    try:
        return float(x)
    except (TypeError, ValueError):
        raise DTypeError(f"{name}: expected a number, got {type(x).__name__}", argument=name) from None


def _as_int64(x, name):
    if isinstance(x, bool):
        raise DTypeError(f"{name}: expected an integer, got bool", argument=name)
    try:
        v = operator.index(x)
    except TypeError:
        item = getattr(x, "item", None)
        v = item() if callable(item) else None
        if not isinstance(v, int) or isinstance(v, bool):
            raise DTypeError(f"{name}: expected an integer, got {type(x).__name__}", argument=name) from None
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise InvalidValueError(f"{name}: {v} does not fit in a 64-bit integer", argument=name)
    return v


class Controller(_lib.NativeHandle):
    """The entropy controller handle, built from the ``controller`` section of a config document.

    ``controller.statistic`` picks what drives it: "nll" (pass ``nll=`` or ``nll_sum=`` with
    ``count=``) or "entropy" (pass ``entropy=`` or ``entropy_sum=`` with ``count=``; the
    config also accepts the older spelling "exact" for it). Sums are
    what a trainer all-reduces across ranks; the statistic is ``sum / count``.
    """

    _kind = "controller"

    def __init__(self, cfg=None):
        super().__init__(cfg)
        # Reused by step(), the per-training-step call. An instance belongs to one thread at
        # a time; if one is shared anyway, the lock keeps a thread from reading another's
        # decision out of these buffers (the C handle serialises the steps themselves).
        self._lock = threading.Lock()
        self._d = _lib.CDecision()
        self._err = _lib.Error()
        self._dp = ctypes.byref(self._d)
        self._errp = ctypes.byref(self._err)
        spelling = self._config["controller"]["statistic"]
        self._statistic = _STATISTIC_ALIASES.get(spelling, spelling)

    # queries

    @property
    def statistic(self):
        """The statistic ``controller.statistic`` picks: "nll" or "entropy" (also for a config
        that spells it "exact")."""
        return self._statistic

    def decision(self) -> Decision:
        """The decision for the coming step (does not advance)."""
        d = _lib.CDecision()
        _lib.call(_lib.lib.aepo_controller_decision, self._handle(), ctypes.byref(d))
        return Decision._from_c(d)

    def history(self) -> List[Decision]:
        """The last ``controller.history`` decisions, oldest first; the last is the pending one."""
        h = self._handle()
        n = ctypes.c_int64(0)
        _lib.call(_lib.lib.aepo_controller_history_count, h, ctypes.byref(n))
        out = []
        d = _lib.CDecision()
        for i in range(n.value):
            _lib.call(_lib.lib.aepo_controller_history, h, i, ctypes.byref(d))
            out.append(Decision._from_c(d))
        return out

    # stepping

    def step(self, *, entropy=None, nll=None, entropy_sum=None, nll_sum=None, count=None, metrics=None,
             step=None) -> Decision:
        """Records the statistic of the update that just finished, advances, and returns the
        decision for the next step.

        ``metrics=`` takes the loss metrics of the update (the ``metrics`` dict of a
        :class:`aepo.LossResult`, of ``FusedHead.loss_and_grad``, or a sequence in metric
        index order): the library then picks ``controller.statistic`` over the rows
        ``controller.statistic_rows`` names (main rows, or main and regulariser rows weighted
        by their token counts). It excludes the other statistic arguments.

        Pass the statistic ``controller.statistic`` picks, as a token mean (``nll=`` /
        ``entropy=``) or as a sum with its token count (``nll_sum=`` / ``entropy_sum=`` with
        ``count=``). The other statistic may be passed too (for logging) and is ignored;
        passing only the other one is an error. ``step`` is the training step the statistic
        belongs to (default: the pending decision's step); the returned decision is for
        ``step + 1``. A call that raises leaves the controller unchanged.
        """
        h = self._handle()
        if metrics is not None:
            given = [k for k, v in (("entropy", entropy), ("nll", nll), ("entropy_sum", entropy_sum),
                                    ("nll_sum", nll_sum), ("count", count)) if v is not None]
            if given:
                raise InvalidValueError(f"metrics: pass either metrics= or {given[0]}=, not both", argument="metrics")
            arr = self._metric_array(metrics)
            s = STEP_NEXT if step is None else _as_int64(step, "step")
            if step is not None and s < 0:
                raise InvalidValueError(f"step: is {s}; a step must be >= 0", argument="step")
            with self._lock:
                status = _lib.lib.aepo_controller_step_metrics(h, arr, len(arr), s, self._dp, self._errp)
                if status != 0:
                    _lib.raise_error(status, self._err)
                return Decision._from_c(self._d)
        if self._statistic == "nll":
            want, value, total, code = "nll", nll, nll_sum, STATISTIC_NLL
            others = {"entropy": entropy, "entropy_sum": entropy_sum}
        else:
            want, value, total, code = "entropy", entropy, entropy_sum, STATISTIC_ENTROPY
            others = {"nll": nll, "nll_sum": nll_sum}
        if value is None and total is None:
            given = [k for k, v in others.items() if v is not None]
            got = f", but got only {' and '.join(given)}" if given else ""
            raise InvalidValueError(
                f"{want}: missing; controller.statistic is \"{self._statistic}\", so step() needs {want}= "
                f"(or {want}_sum= with count=){got}", argument=want)
        if value is not None and total is not None:
            raise InvalidValueError(f"{want}: pass either {want}= or {want}_sum= with count=, not both",
                                    argument=want)
        s = STEP_NEXT if step is None else _as_int64(step, "step")
        if step is not None and s < 0:
            raise InvalidValueError(f"step: is {s}; a step must be >= 0", argument="step")
        if total is not None:
            if count is None:
                raise InvalidValueError(f"count: missing; {want}_sum= needs the token count it sums over",
                                        argument="count")
            args = (_lib.lib.aepo_controller_step_sums, h, code, _as_float(total, f"{want}_sum"),
                    _as_int64(count, "count"), s)
        else:
            if count is not None:
                raise InvalidValueError(f"count: goes with {want}_sum=, not with a mean {want}=", argument="count")
            args = (_lib.lib.aepo_controller_step, h, code, _as_float(value, want), s)
        with self._lock:
            status = args[0](*args[1:], self._dp, self._errp)
            if status != 0:
                _lib.raise_error(status, self._err)
            return Decision._from_c(self._d)

    @staticmethod
    def _metric_array(metrics):
        from .loss import METRIC_NAMES
        if isinstance(metrics, dict):
            missing = [n for n in METRIC_NAMES if n not in metrics]
            if missing:
                raise InvalidValueError(f"metrics: missing {', '.join(missing)}; pass the whole metrics dict of "
                                        "a loss call", argument="metrics")
            values = [metrics[n] for n in METRIC_NAMES]
        else:
            try:
                values = list(metrics)
            except TypeError:
                raise DTypeError(f"metrics: expected a dict or a sequence of numbers, got {type(metrics).__name__}",
                                 argument="metrics") from None
        return (ctypes.c_double * len(values))(*[_as_float(v, "metrics") for v in values])

    # checkpoints

    def state_dict(self) -> dict:
        """The controller's state as a JSON-serialisable dict (reals kept exactly)."""
        return json.loads(_lib.read_text(_lib.lib.aepo_controller_state_json, self._handle()))

    def load_state_dict(self, state) -> None:
        """Restores a state from :meth:`state_dict` (a dict or its JSON text). Resuming with the
        same config continues bit for bit. A state from another mode, statistic or actuator, or
        a malformed one, raises :class:`aepo.StateError` and changes nothing."""
        h = self._handle()
        if isinstance(state, (str, bytes, bytearray)):
            data = state.encode() if isinstance(state, str) else bytes(state)
        elif isinstance(state, dict):
            try:
                data = json.dumps(state, allow_nan=False).encode()
            except (TypeError, ValueError) as e:
                raise StateError(f"state: not JSON-serialisable: {e}", argument="state") from None
        else:
            raise StateError(f"state: expected a dict or JSON text, got {type(state).__name__}", argument="state")
        _lib.call(_lib.lib.aepo_controller_restore, h, data, len(data))

    def __repr__(self):
        if self._h is None:
            return "Controller(closed)"
        c = self._config["controller"]
        return f"Controller(mode={c['mode']!r}, statistic={c['statistic']!r}, next={self.decision()})"


# Deprecated since 0.2, removed in the next release: old name -> (module, new name, use instead).
__getattr__ = _module_getattr(__name__, {
    "EntropyController": ("aepo.controller", "Controller", "aepo.Controller"),
    "STATISTIC_EXACT": ("aepo.controller", "STATISTIC_ENTROPY", "aepo.controller.STATISTIC_ENTROPY"),
})
