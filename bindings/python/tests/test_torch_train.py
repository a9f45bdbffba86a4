"""A tiny policy trained for 20 steps with aepo.torch (logits_stats + policy_loss) tracks the same
policy trained with a plain PyTorch transcription of the loss, step for step."""
import copy

import numpy as np
import pytest

import aepo

torch = pytest.importorskip("torch")
import aepo.torch as at  # noqa: E402
import torch_reference as ref  # noqa: E402

STEPS, EPOCHS = 20, 2
PROMPTS, N = 4, 4            # 4 prompts x 4 responses
L, D, H, V = 6, 8, 16, 12
GOOD = 4                     # tokens 0..3 earn reward
CFG = {"loss": {"clip_ratio_high": 0.28, "entropy_coeff": 0.01, "kl_loss_type": "low_var_kl", "kl_loss_coef": 0.05,
                "loss_agg_mode": "token-mean"}}


class Policy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.Tanh())
        self.head = torch.nn.Linear(H, V)

    def forward(self, x):
        return self.head(self.body(x))


def aepo_loss(model, X, targets, mask, old_logp, ref_logp, adv):
    s = at.logits_stats(model(X), targets, 1.0, mask=mask)
    return at.policy_loss(s.logp, old_logp, adv, mask, config=CFG, entropy=s.entropy, ref_logp=ref_logp)


def torch_loss(model, X, targets, mask, old_logp, ref_logp, adv):
    lc = CFG["loss"]
    lp, ent = ref.logits_stats(model(X), targets, 1.0, mask=mask)
    return ref.policy_loss(lp, old_logp, adv, mask, clip_high=lc["clip_ratio_high"], entropy=ent,
                           entropy_coeff=lc["entropy_coeff"], ref=ref_logp, kl_type=lc["kl_loss_type"],
                           kl_coef=lc["kl_loss_coef"])


def test_twenty_steps_track_a_pure_torch_transcription():
    torch.manual_seed(0)
    model_a = Policy()
    model_b = copy.deepcopy(model_a)
    reference_model = copy.deepcopy(model_a).requires_grad_(False)
    opt_a = torch.optim.SGD(model_a.parameters(), lr=0.5)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.5)
    gen = torch.Generator().manual_seed(1)
    groups = np.repeat(np.arange(PROMPTS), N)
    rewards, gaps, losses = [], [], []
    for step in range(STEPS):
        prompts = torch.randn(PROMPTS, 1, D, generator=gen)
        X = (prompts + 0.3 * torch.randn(PROMPTS, L, D, generator=gen)).repeat_interleave(N, dim=0)
        with torch.no_grad():  # rollouts from model A; both models learn from the same data
            probs = torch.softmax(model_a(X), -1)
            targets = torch.multinomial(probs.reshape(-1, V), 1, generator=gen).reshape(-1, L)
            lengths = torch.randint(2, L + 1, (PROMPTS * N,), generator=gen)
            mask = torch.arange(L)[None, :] < lengths[:, None]
            r = ((targets < GOOD) & mask).sum(1).float() / lengths.float()
            adv = torch.from_numpy(aepo.compute_advantages(r.numpy(), groups))
            ref_logp = ref.logits_stats(reference_model(X), targets, 1.0, mask=mask)[0]
            old_a = at.logits_stats(model_a(X), targets, 1.0, mask=mask).logp
            old_b = ref.logits_stats(model_b(X), targets, 1.0, mask=mask)[0]
        rewards.append(r.mean().item())
        for epoch in range(EPOCHS):
            opt_a.zero_grad()
            opt_b.zero_grad()
            la = aepo_loss(model_a, X, targets, mask, old_a, ref_logp, adv)
            lb = torch_loss(model_b, X, targets, mask, old_b, ref_logp, adv)
            la.backward()
            lb.backward()
            opt_a.step()
            opt_b.step()
            gaps.append(abs(la.item() - lb.item()))
            losses.append(lb.item())
    worst = max(gaps)
    scale = max(abs(v) for v in losses)
    print(f"20 steps: max |loss_aepo - loss_torch| = {worst:.3e} (loss scale {scale:.3f})")
    assert worst <= 1e-6 * max(scale, 1.0), f"losses drift apart: {worst:.3e}"
    pa = torch.cat([p.detach().flatten() for p in model_a.parameters()])
    pb = torch.cat([p.detach().flatten() for p in model_b.parameters()])
    p0 = torch.cat([p.flatten() for p in reference_model.parameters()])
    moved = (pb - p0).abs().max().item()
    drift = (pa - pb).abs().max().item()
    print(f"parameters moved by {moved:.3f}; the two runs differ by {drift:.3e}")
    assert moved > 0.1 and drift <= 1e-5 * moved
    # and it learned: more of the rewarded tokens at the end than at the start
    print("mean reward, first 5 steps %.3f, last 5 steps %.3f" % (np.mean(rewards[:5]), np.mean(rewards[-5:])))
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.1, rewards
