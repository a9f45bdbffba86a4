/* task.c - the digit-sum task and its random numbers; see task.h. */
#include "task.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int task_init(task *t, int32_t length, int32_t lo, int32_t hi) {
    if (length < 2 || length > 64) {
        fprintf(stderr, "task: length %d must lie in [2, 64]\n", (int)length);
        return -1;
    }
    if (lo < 0 || lo > hi || hi > 9 * length) {
        fprintf(stderr, "task: the prompt range %d..%d must lie in [0, %d]\n", (int)lo, (int)hi, (int)(9 * length));
        return -1;
    }
    t->length = length;
    t->lo = lo;
    t->hi = hi;
    t->need_levels = 9 * length + 2;
    t->dim = t->need_levels * length;
    return 0;
}

int32_t task_state_index(const task *t, int32_t need, int32_t pos) {
    int32_t top = 9 * t->length;
    int32_t n = need < -1 ? -1 : (need > top ? top : need);
    return (n + 1) * t->length + pos;
}

void task_one_hot(const task *t, const int32_t *states, int64_t n, float *X) {
    int64_t r;
    memset(X, 0, (size_t)n * (size_t)t->dim * sizeof *X);
    for (r = 0; r < n; r++) {
        X[r * t->dim + states[r]] = 1.0f;
    }
}

void task_rng_seed(task_rng *r, uint64_t seed) {
    r->state = seed;
}

uint64_t task_rng_next(task_rng *r) {
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double task_rng_uniform(task_rng *r) {
    return (double)(task_rng_next(r) >> 11) * (1.0 / 9007199254740992.0); /* 53 bits / 2^53 */
}

int32_t task_rng_int(task_rng *r, int32_t lo, int32_t hi) {
    /* Rejection keeps the draw exactly uniform: accept only below the largest multiple of
     * the range that fits in 64 bits. */
    uint64_t range = (uint64_t)(hi - lo) + 1;
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do {
        x = task_rng_next(r);
    } while (x >= limit);
    return lo + (int32_t)(x % range);
}

double task_rng_normal(task_rng *r) {
    const double two_pi = 6.283185307179586;
    double u1 = 1.0 - task_rng_uniform(r); /* in (0, 1], so the log is finite */
    double u2 = task_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

void task_initial_head(const task *t, uint64_t seed, double scale, float *W, float *bias) {
    task_rng r;
    int64_t i, n = (int64_t)TASK_VOCAB * t->dim;
    task_rng_seed(&r, seed);
    for (i = 0; i < n; i++) {
        W[i] = (float)(scale * task_rng_normal(&r));
    }
    for (i = 0; i < TASK_VOCAB; i++) {
        bias[i] = 0.0f;
    }
}
