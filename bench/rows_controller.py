"""Per-step cost of the entropy controller: the raw C call through ctypes and the
aepo.Controller.step() wrapper, each against a pure-Python PI step of the same arithmetic
(what a trainer would otherwise write inline)."""
import ctypes

from benchlib import Row

N = 20000


class PythonPI:
    """The adaptive rule in plain Python (velocity form, rate limit, clamp), for the peer."""

    def __init__(self, target=0.5, kp=5.0, ki=1.5, rate=0.3, t_min=0.5, t_max=2.0):
        self.target, self.kp, self.ki, self.rate = target, kp, ki, rate
        self.t_min, self.t_max = t_min, t_max
        self.t = 1.0
        self.e_prev = 0.0

    def step(self, y):
        e = self.target - y
        delta = self.kp * (e - self.e_prev) + self.ki * e
        delta = min(max(delta, -self.rate), self.rate)
        self.t = min(max(self.t + delta, self.t_min), self.t_max)
        self.e_prev = e
        return self.t


def rows(ctx):
    from aepo import Controller, _lib

    cfg = {"controller": {"mode": "adaptive", "history": 32, "adaptive": {"tuning": "fixed"}}}
    state = {}
    ys = [0.5 + 0.01 * ((i * 7919) % 13 - 6) for i in range(N)]

    def setup():
        state["ctl"] = Controller(cfg)
        state["pi"] = PythonPI()

    def teardown():
        state["ctl"].close()

    def raw_calls():
        ctl = state["ctl"]
        fn = _lib.lib.aepo_controller_step
        h = ctl._h
        d = _lib.CDecision()
        err = _lib.Error()
        dp, ep = ctypes.byref(d), ctypes.byref(err)
        for y in ys:
            fn(h, 0, y, -1, dp, ep)

    def wrapper_calls():
        step = state["ctl"].step
        for y in ys:
            step(nll=y)

    def python_pi():
        step = state["pi"].step
        for y in ys:
            step(y)

    return [
        Row(name=f"controller step, raw ctypes call x{N}", lib=raw_calls, peer=python_pi,
            peer_name="pure-Python PI step", setup=setup, teardown=teardown),
        Row(name=f"Controller.step(nll=) x{N}", lib=wrapper_calls, peer=python_pi,
            peer_name="pure-Python PI step", setup=setup, teardown=teardown),
    ]
