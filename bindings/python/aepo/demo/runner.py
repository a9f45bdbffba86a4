"""One training run: GRPO, or GRPO plus the AEPO regulariser driven by the entropy controller.

A step follows the reference algorithm (arXiv 2510.08141; see docs/DEMO.md):
  1. main rollouts at the policy temperature (1.0), n per prompt, rewards, GRPO advantages;
  2. the controller's decision for this step (temperature, k_max, halving, alpha);
  3. regulariser rollouts at the controller's temperature for the first `frac` of the prompts;
  4. selection of the positives (group advantage > threshold), first k in order;
  5. `replace`: the k positives take the place of the first k main responses with advantage 1
     (or `weighted`: they are appended and weighted by alpha);
  6. old log-probs at T = 1, then one policy-gradient update through the fused LM head;
  7. the controller is fed the statistic of the update that just finished, from the loss
     metrics: controller.statistic over the rows controller.statistic_rows picks (by
     default the whole update batch, as the reference).
"""
import math
from dataclasses import dataclass, field

import numpy as np

import aepo

from .task import VOCAB, initial_head


@dataclass
class RunSpec:
    name: str
    mode: str            # "grpo", "bang_bang" or "adaptive"
    target: float = float("nan")


@dataclass
class Hyper:
    steps: int = 400
    prompts_per_step: int = 32
    samples_per_prompt: int = 8
    reg_fraction: float = 1.0
    lr: float = 0.025
    init_seed: int = 1
    seed: int = 0
    combine: str = "replace"
    eval_samples: int = 64


class Adam:
    def __init__(self, params, lr, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)).astype(p.dtype)


@dataclass
class RunResult:
    spec: RunSpec
    rows: list = field(default_factory=list)
    W: np.ndarray = None
    b: np.ndarray = None


def rollout(task, W, b, sampler, prompts, *, step, row_offset, temperature):
    """Samples one response per prompt entry; returns tokens [N, L], states [N, L], rewards [N]."""
    n, L = len(prompts), task.length
    need = prompts.astype(np.int64).copy()
    tokens = np.zeros((n, L), dtype=np.int64)
    states = np.zeros((n, L), dtype=np.int64)
    for j in range(L):
        idx = task.state_index(need, j)
        states[:, j] = idx
        # logits = onehot(idx) W^T + b, read directly instead of multiplying by a one-hot.
        logits = np.ascontiguousarray(W[:, idx].T + b)
        res = sampler.sample(logits, step=step, position=j, row_offset=row_offset, temperature=temperature)
        tokens[:, j] = res.tokens
        need -= res.tokens
    rewards = (need == 0).astype(np.float32)
    return tokens, states, rewards


def build_config(base, spec, hyper):
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    ctrl = dict(cfg.get("controller", {}))
    if spec.mode != "grpo":
        ctrl["mode"] = spec.mode
        ctrl["target"] = spec.target
    cfg["controller"] = ctrl
    reg = dict(cfg.get("regularizer", {}))
    reg["combine"] = hyper.combine
    cfg["regularizer"] = reg
    samp = dict(cfg.get("sampler", {}))
    samp.setdefault("seed", hyper.seed)
    cfg["sampler"] = samp
    return aepo.validate_config(cfg)


def train(task, spec, base_config, hyper, progress=None):
    cfg = build_config(base_config, spec, hyper)
    W, b = initial_head(task, hyper.init_seed)
    opt = Adam([W, b], hyper.lr)
    rng = np.random.default_rng(hyper.seed)
    B, n, L = hyper.prompts_per_step, hyper.samples_per_prompt, task.length
    result = RunResult(spec=spec)
    threshold = cfg["regularizer"]["threshold"]
    policy_T = cfg["sampler"]["temperature"]
    with aepo.Sampler(cfg) as sampler, aepo.Loss(cfg) as loss, aepo.FusedHead(cfg) as head, \
            aepo.Controller(cfg) as ctrl:
        for step in range(hyper.steps):
            prompts = np.repeat(rng.choice(task.prompts, size=B), n)
            groups = np.repeat(np.arange(B, dtype=np.int64), n)
            toks, states, rewards = rollout(task, W, b, sampler, prompts, step=step, row_offset=0,
                                            temperature=policy_T)
            adv = aepo.compute_advantages(rewards, groups)

            # Exact T = 1 token entropy of the on-policy batch, reported beside the statistic.
            X_main = task.hidden(states.reshape(-1))
            _, ent_main, _ = head.forward(X_main, W, toks.reshape(-1), bias=b)
            exact = float(np.mean(ent_main))

            k, n_pos, temp, target = 0, 0, float("nan"), float("nan")
            upd_toks, upd_states, upd_adv = toks, states, adv
            reg_rows = np.zeros(len(toks), dtype=np.uint8)
            extra = {}
            d = None
            if spec.mode != "grpo":
                d = ctrl.decision()
                temp, target = d.temperature, d.target
                nb = max(1, int(round(B * hyper.reg_fraction)))
                p_reg = prompts[: nb * n]
                t_reg, s_reg, r_reg = rollout(task, W, b, sampler, p_reg, step=step, row_offset=B * n,
                                              temperature=d.temperature)
                sel = aepo.select_regularizer(r_reg, groups[: nb * n], k_max=d.k_max, halve=d.halve,
                                              threshold=threshold)
                k, n_pos = int(sel.k), int(sel.n_positive)
                # The regulariser rows are marked in reg_rows under either combine: their
                # advantage is 1 either way, and the loss metrics then split the statistic by role.
                if k and hyper.combine == "replace":
                    upd_toks = np.concatenate([t_reg[sel.indices], toks[k:]])
                    upd_states = np.concatenate([s_reg[sel.indices], states[k:]])
                    upd_adv = np.concatenate([np.ones(k, dtype=np.float32), adv[k:]])
                    reg_rows[:k] = 1
                elif k:
                    upd_toks = np.concatenate([toks, t_reg[sel.indices]])
                    upd_states = np.concatenate([states, s_reg[sel.indices]])
                    upd_adv = np.concatenate([adv, np.ones(k, dtype=np.float32)])
                    reg_rows = np.zeros(len(upd_toks), dtype=np.uint8)
                    reg_rows[len(toks):] = 1
                    # alpha comes from the controller when it drives alpha, else regularizer.alpha.
                    if d.alpha is not None:
                        extra["reg_alpha"] = d.alpha
                extra["reg_rows"] = reg_rows

            rows = len(upd_toks)
            X = task.hidden(upd_states.reshape(-1))
            targets = upd_toks.reshape(-1)
            mask = np.ones((rows, L), dtype=np.uint8)
            old_logp, _, _ = head.forward(X, W, targets, bias=b)
            old_logp = old_logp.reshape(rows, L)
            # The token NLL of the whole update batch, at T = 1 with the parameters the update
            # starts from (the reference's statistic), logged for every run.
            nll = float(-old_logp.mean())
            lval, _, dW, db, metrics, _, _ = head.loss_and_grad(X, W, targets, loss, old_logp, upd_adv, mask,
                                                                bias=b, step=step, **extra)
            opt.step([dW, db])
            fed = nll
            if spec.mode != "grpo":
                # The library picks the statistic and its rows from the update's metrics.
                nxt = ctrl.step(metrics=metrics, step=step)
                fed = nxt.statistic
            est = d.estimate if d is not None else None
            result.rows.append({
                "run": spec.name, "mode": spec.mode, "step": step,
                "target": target, "statistic": fed, "nll_all": nll, "nll_main": float(metrics["nll_main"]),
                "entropy_exact": exact, "reward": float(rewards.mean()), "temperature": temp, "k": k,
                "n_positive": n_pos, "loss": float(lval),
                "est_gain": est.gain if est else float("nan"),
                "est_same_step": est.same_step if est else float("nan"),
                "est_delay": est.delay if est else -1,
                "est_measurement_noise": est.measurement_noise if est else float("nan"),
            })
            if progress:
                progress(step + 1)
    result.W, result.b = W, b
    return result


def pass_at_k(n, c, k):
    """Unbiased pass@k of Chen et al. 2021 from n samples with c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.exp(math.lgamma(n - c + 1) - math.lgamma(n - c - k + 1)
                          - math.lgamma(n + 1) + math.lgamma(n - k + 1))


def evaluate(task, result, base_config, hyper, ks):
    """pass@k at the policy temperature on the held-out sums, and the distinct correct answers
    found among the samples of every sum (trained and held out)."""
    cfg = build_config(base_config, result.spec, hyper)
    n = hyper.eval_samples
    held_out = task.held_out_prompts()
    everything = np.concatenate([task.prompts, held_out])
    prompts = np.repeat(everything, n)
    with aepo.Sampler(cfg) as sampler:
        toks, _, rewards = rollout(task, result.W, result.b, sampler, prompts, step=10 ** 9, row_offset=0,
                                   temperature=cfg["sampler"]["temperature"])
    correct = rewards.reshape(len(everything), n)[len(task.prompts):]
    c = correct.sum(axis=1)
    passk = {k: float(np.mean([pass_at_k(n, int(ci), k) for ci in c])) for k in ks if k <= n}
    distinct = len({(int(p), tuple(t)) for p, t, r in zip(prompts, toks, rewards) if r > 0})
    return passk, distinct
