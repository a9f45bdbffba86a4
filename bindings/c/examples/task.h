/* task.h - the digit-sum task of the example trainer, and its seeded random numbers.
 *
 * The task is the one the Python demo trains on (docs/DEMO.md): a prompt is a number s, a
 * response is `length` digits, and the reward is 1 when the digits sum to s, else 0. Middle
 * sums have tens of thousands of correct answers (55,252 for s = 27 with 6 digits), so a
 * policy can be right in very many ways, and collapsing onto a few of them costs nothing
 * in reward but everything in diversity.
 *
 * The policy is autoregressive over the digits. Its hidden state at position j is a one-hot
 * code of the decoding state (the sum still needed, j), so the LM head W [V, D] with a bias
 * [V] is the whole policy: logits = x W^T + bias, V = 10 digits, D = task_dim().
 *
 * Nothing here calls libaepo.
 */
#ifndef AEPO_EXAMPLE_TASK_H
#define AEPO_EXAMPLE_TASK_H

#include <stdint.h>

#define TASK_VOCAB 10 /* the digits 0..9 */

typedef struct task {
    int32_t length;      /* digits per response (L) */
    int32_t lo, hi;      /* training prompts: the sums lo..hi */
    int32_t need_levels; /* the sum still needed, clipped to [-1, 9 L]: 9 L + 2 levels */
    int32_t dim;         /* D = need_levels * length, the width of the hidden state */
} task;

/* Sets up the task; returns 0, or -1 (with a message on stderr) for a bad length or range. */
int task_init(task *t, int32_t length, int32_t lo, int32_t hi);

/* The index of the hot entry of the hidden state for (sum still needed, position). */
int32_t task_state_index(const task *t, int32_t need, int32_t pos);

/* Writes the one-hot hidden states X [n, D] of n state indices. */
void task_one_hot(const task *t, const int32_t *states, int64_t n, float *X);

/* A seeded stream of random numbers (SplitMix64), for the prompts and the initial head.
 * The sampler has its own counter-based generator inside libaepo. */
typedef struct task_rng {
    uint64_t state;
} task_rng;

void task_rng_seed(task_rng *r, uint64_t seed);
uint64_t task_rng_next(task_rng *r);
double task_rng_uniform(task_rng *r);                 /* in [0, 1) */
int32_t task_rng_int(task_rng *r, int32_t lo, int32_t hi); /* uniform in [lo, hi] */
double task_rng_normal(task_rng *r);                  /* N(0, 1), Box-Muller */

/* A peaked starting policy, like a pretrained model's: W ~ N(0, scale^2) per entry, bias 0.
 * W is [TASK_VOCAB, D] row-major, bias [TASK_VOCAB]. */
void task_initial_head(const task *t, uint64_t seed, double scale, float *W, float *bias);

#endif
