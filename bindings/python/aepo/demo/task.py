"""The built-in verifiable task: write L digits whose sum is the prompt.

A prompt is a number s; a response is L digits d_1..d_L; the reward is 1 when
d_1 + ... + d_L == s, else 0. Middle sums have tens of thousands of correct answers (55,252
for s = 27 with L = 6), so there is plenty to explore, and a policy that collapses onto a few
answers loses nothing in pass@1 but a lot in diversity.

The policy is autoregressive. Its hidden state at position j is a one-hot code of the
decoding state (the sum still needed, the position), so the LM head W [V, D] with bias b is
the whole policy: logits = X W^T + b. Training runs that head through libaepo's fused path.
"""
import numpy as np

VOCAB = 10  # the digits


class DigitSumTask:
    def __init__(self, length=6, lo=15, hi=39):
        if length < 2:
            raise ValueError("length must be >= 2")
        if not (0 <= lo <= hi <= 9 * length):
            raise ValueError(f"prompt range must lie in [0, {9 * length}]")
        self.length = length
        self.prompts = np.arange(lo, hi + 1, dtype=np.int64)
        self.need_levels = 9 * length + 2          # remaining sum clipped to [-1, 9L]
        self.dim = self.need_levels * length        # D, the width of the hidden state

    def held_out_prompts(self, margin=2):
        """Sums never trained on: [margin, 9L - margin] outside the training range."""
        top = 9 * self.length - margin
        allp = np.arange(margin, top + 1, dtype=np.int64)
        return allp[(allp < self.prompts[0]) | (allp > self.prompts[-1])]

    def state_index(self, need, pos):
        n = np.clip(need, -1, 9 * self.length) + 1
        return n * self.length + pos

    def hidden(self, index):
        """One-hot hidden states [len(index), D] for state indices."""
        x = np.zeros((len(index), self.dim), dtype=np.float32)
        x[np.arange(len(index)), index] = 1.0
        return x

    def count_correct_answers(self, s):
        """Number of digit strings of this length summing to s (for the docs and tests)."""
        ways = np.zeros(9 * self.length + 1, dtype=object)
        ways[0] = 1
        for _ in range(self.length):
            nxt = np.zeros_like(ways)
            for d in range(10):
                nxt[d:] += ways[: len(ways) - d]
            ways = nxt
        return int(ways[s]) if 0 <= s < len(ways) else 0


def initial_head(task, seed, scale=1.6):
    """A peaked starting policy, like a pretrained model's: N(0, scale^2) logits per state."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, scale, size=(VOCAB, task.dim)).astype(np.float32)
    b = np.zeros(VOCAB, dtype=np.float32)
    return W, b
