/* A deterministic workload over every entry point, shared by the stress, determinism and
 * leak programs (Tests/reliability/). A worker owns one handle of each kind and runs
 * `calls` calls, rotating through the entry points with inputs derived from its seed and
 * the call number; it folds every status and every output byte into a 64-bit digest, so
 * two runs of the same worker agree exactly when every result does. */
#ifndef AEPO_RELIABILITY_WORKLOAD_H
#define AEPO_RELIABILITY_WORKLOAD_H

#include <aepo.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ helpers --- */

typedef struct rng {
    uint64_t s;
} rng;

static inline uint64_t rng_next(rng *r) {
    /* splitmix64 */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static inline float rng_float(rng *r, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(rng_next(r) >> 11) / 9007199254740992.0);
}

static inline int64_t rng_below(rng *r, int64_t n) { return (int64_t)(rng_next(r) % (uint64_t)n); }

static inline void digest_bytes(uint64_t *h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; i++) {
        *h ^= b[i];
        *h *= 0x100000001b3ull;
    }
}

static inline void digest_i32(uint64_t *h, int32_t v) { digest_bytes(h, &v, sizeof v); }

#define WL_FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)
#define WL_OK(call, errp) do { \
    int32_t wl_rc_ = (call); \
    if (wl_rc_ != AEPO_OK) WL_FAIL("%s:%d: %s returned %s: %s", __FILE__, __LINE__, #call, \
                                   aepo_status_name(wl_rc_), (errp)->message); \
} while (0)

/* --------------------------------------------------------------- the worker --- */

/* Sizes: small enough for 10^4 calls per thread in seconds, large enough to take every
 * code path (several rows, masks, clipping, truncation, chunked fused blocks). */
enum { WL_B = 4, WL_L = 24, WL_N = WL_B * WL_L, WL_R = 12, WL_KV = 48, WL_SV = 64, WL_SN = 6,
       WL_FN = 8, WL_FD = 8, WL_FV = 40 };

typedef struct worker {
    aepo_loss *loss;
    aepo_controller *ctl;
    aepo_sampler *sampler;
    aepo_fused_head *fused;
    /* Inputs, fixed per worker. */
    float logp[WL_N], old_logp[WL_N], ref_logp[WL_N], entropy[WL_N], adv[WL_B];
    uint8_t mask[WL_N];
    float rewards[WL_R];
    int64_t groups[WL_R];
    float logits[2 * 4 * WL_KV];
    int32_t ktargets[8];
    uint8_t kmask[8];
    float slogits[WL_SN * WL_SV];
    float X[WL_FN * WL_FD], W[WL_FV * WL_FD], bias[WL_FV];
    int32_t ftargets[WL_FN];
    uint8_t fmask[WL_FN];
    float fold[WL_FN], fadv[WL_FN], fref[WL_FN];
    uint64_t digest;
    int calls_done;
} worker;

/* The configs of a worker: threads > 1 where `threads` says so (the library's own pthreads
 * on top of the caller's). */
static inline void worker_configs(int threads, char *loss, char *ctl, char *samp, char *fused, size_t cap) {
    snprintf(loss, cap,
             "{\"loss\": {\"kl_loss_coef\": 0.05, \"entropy_coeff\": 0.01, \"clip_ratio_high\": 0.28, "
             "\"threads\": %d}, \"regularizer\": {\"combine\": \"weighted\"}}", threads);
    snprintf(ctl, cap, "{\"controller\": {\"mode\": \"adaptive\", \"target\": 0.8, \"history\": 8}}");
    snprintf(samp, cap, "{\"sampler\": {\"top_k\": 20, \"top_p\": 0.9, \"min_p\": 0.01, \"seed\": 7, \"threads\": %d}}",
             threads);
    snprintf(fused, cap, "{\"fused\": {\"chunk_n\": 3, \"chunk_v\": 16, \"temperature\": 0.9, \"threads\": %d}}",
             threads);
}

static inline void worker_init(worker *w, uint64_t seed, int threads) {
    char lc[512], cc[512], sc[512], fc[512];
    aepo_error e;
    rng r;
    int i;
    memset(w, 0, sizeof *w);
    r.s = seed * 0x2545f4914f6cdd1dull + 1;
    worker_configs(threads, lc, cc, sc, fc, sizeof lc);
    WL_OK(aepo_loss_create(lc, strlen(lc), &w->loss, &e), &e);
    WL_OK(aepo_controller_create(cc, strlen(cc), &w->ctl, &e), &e);
    WL_OK(aepo_sampler_create(sc, strlen(sc), &w->sampler, &e), &e);
    WL_OK(aepo_fused_head_create(fc, strlen(fc), &w->fused, &e), &e);
    for (i = 0; i < WL_N; i++) {
        w->logp[i] = rng_float(&r, -6, -0.05f);
        w->old_logp[i] = w->logp[i] + rng_float(&r, -0.4f, 0.4f);
        w->ref_logp[i] = w->logp[i] + rng_float(&r, -0.2f, 0.2f);
        w->entropy[i] = rng_float(&r, 0.1f, 3);
        w->mask[i] = (uint8_t)((i % WL_L) < WL_L - (i / WL_L) * 3);
    }
    for (i = 0; i < WL_B; i++) w->adv[i] = rng_float(&r, -2, 2);
    for (i = 0; i < WL_R; i++) {
        w->rewards[i] = (float)rng_below(&r, 2);
        w->groups[i] = i / 4;
    }
    for (i = 0; i < 2 * 4 * WL_KV; i++) w->logits[i] = rng_float(&r, -5, 5);
    for (i = 0; i < 8; i++) {
        w->ktargets[i] = (int32_t)rng_below(&r, WL_KV);
        w->kmask[i] = (uint8_t)(i != 3);
    }
    for (i = 0; i < WL_SN * WL_SV; i++) w->slogits[i] = rng_float(&r, -4, 4);
    for (i = 0; i < WL_FN * WL_FD; i++) w->X[i] = rng_float(&r, -1, 1);
    for (i = 0; i < WL_FV * WL_FD; i++) w->W[i] = rng_float(&r, -1, 1);
    for (i = 0; i < WL_FV; i++) w->bias[i] = rng_float(&r, -0.5f, 0.5f);
    for (i = 0; i < WL_FN; i++) {
        w->ftargets[i] = (int32_t)rng_below(&r, WL_FV);
        w->fmask[i] = (uint8_t)(i != 5);
        w->fold[i] = rng_float(&r, -4, -0.5f);
        w->fadv[i] = rng_float(&r, -1, 1);
        w->fref[i] = w->fold[i] + rng_float(&r, -0.3f, 0.3f);
    }
    w->digest = 0xcbf29ce484222325ull;
}

static inline void worker_free(worker *w) {
    aepo_loss_free(w->loss);
    aepo_controller_free(w->ctl);
    aepo_sampler_free(w->sampler);
    aepo_fused_head_free(w->fused);
}

/* The fused head's inputs over hidden states X (the worker's W, bias and targets). */
static inline void wl_head_inputs(const worker *w, const float *X, const uint8_t *mask, aepo_fused_head_inputs *in) {
    aepo_error e;
    WL_OK(aepo_fused_head_inputs_init(in, sizeof *in, &e), &e);
    in->X = X;
    in->W = w->W;
    in->bias = w->bias;
    in->targets = w->ftargets;
    in->mask = mask;
    in->N = WL_FN;
    in->D = WL_FD;
    in->V = WL_FV;
}

/* One call, number k: the entry point is k % 8, the inputs scale with k. The results go
 * into the digest *h. */
static inline void worker_call_into(worker *w, int k, uint64_t *h) {
    aepo_error e;
    float s = 1.0f + (float)(k % 11) / 10.0f;
    int i;
    switch (k % 8) {
    case 0: { /* policy loss */
        aepo_loss_inputs in;
        float lp[WL_N], grad[WL_N], gent[WL_N];
        uint8_t reg[WL_B] = {0, 1, 0, 0};
        double loss, metrics[AEPO_LOSS_METRIC_COUNT];
        for (i = 0; i < WL_N; i++) lp[i] = w->logp[i] * s;
        aepo_loss_inputs_init(&in, sizeof in, NULL);
        in.B = WL_B;
        in.L = WL_L;
        in.logp = lp;
        in.old_logp = w->old_logp;
        in.advantages = w->adv;
        in.mask = w->mask;
        in.ref_logp = w->ref_logp;
        in.entropy = w->entropy;
        in.reg_rows = reg;
        WL_OK(aepo_loss_compute(w->loss, &in, &loss, grad, gent, metrics, AEPO_LOSS_METRIC_COUNT, &e), &e);
        digest_bytes(h, &loss, sizeof loss);
        digest_bytes(h, grad, sizeof grad);
        digest_bytes(h, gent, sizeof gent);
        digest_bytes(h, metrics, sizeof metrics);
        break;
    }
    case 1: { /* advantages, regulariser selection */
        float rw[WL_R], out[WL_R];
        int64_t idx[WL_R], kk = 0, npos = 0;
        for (i = 0; i < WL_R; i++) rw[i] = w->rewards[(i + k) % WL_R];
        WL_OK(aepo_loss_advantages(w->loss, rw, w->groups, WL_R, NULL, out, &e), &e);
        digest_bytes(h, out, sizeof out);
        WL_OK(aepo_loss_select_regularizer(w->loss, rw, w->groups, WL_R, 1 + k % 5, k & 1, idx, WL_R, &kk, &npos, &e),
              &e);
        digest_bytes(h, idx, (size_t)kk * sizeof idx[0]);
        digest_bytes(h, &npos, sizeof npos);
        break;
    }
    case 2: case 3: { /* logits kernels: stats, then backward from its lse and entropy */
        float lg[2 * 4 * WL_KV], lp[8], ent[8], t1[8], gl[8], gh[8], out[2 * 4 * WL_KV];
        double lse[8], hs, ns;
        int64_t cnt;
        aepo_logits_inputs in;
        for (i = 0; i < 2 * 4 * WL_KV; i++) lg[i] = w->logits[i] * s;
        WL_OK(aepo_logits_inputs_init(&in, sizeof in, &e), &e);
        in.logits = lg;
        in.B = 2;
        in.L = 4;
        in.V = WL_KV;
        in.stride_b = 4 * WL_KV;
        in.stride_l = WL_KV;
        in.targets = w->ktargets;
        in.mask = w->kmask;
        in.temperature = 0.7 + 0.1 * (k % 5);
        in.threads = 1 + k % 3;
        WL_OK(aepo_logits_stats(&in, lp, ent, lse, t1, &hs, &ns, &cnt, &e), &e);
        digest_bytes(h, lp, sizeof lp);
        digest_bytes(h, ent, sizeof ent);
        digest_bytes(h, lse, sizeof lse);
        digest_bytes(h, t1, sizeof t1);
        digest_bytes(h, &hs, sizeof hs);
        digest_bytes(h, &ns, sizeof ns);
        if (k % 8 == 3) {
            for (i = 0; i < 8; i++) {
                gl[i] = 0.1f * (float)(i + 1);
                gh[i] = -0.05f * (float)i;
            }
            in.threads = 1 + k % 2;
            WL_OK(aepo_logits_backward(&in, lse, ent, gl, gh, out, 4 * WL_KV, WL_KV, &e), &e);
            digest_bytes(h, out, sizeof out);
        }
        break;
    }
    case 4: { /* sampler */
        int32_t tok[WL_SN], kept[WL_SN];
        float lp[WL_SN], t1[WL_SN];
        double T = 0.8 + 0.05 * (k % 9);
        WL_OK(aepo_sampler_sample(w->sampler, w->slogits, WL_SN, WL_SV, WL_SV, k, k % 3, 0, &T, tok, lp, t1, kept, &e),
              &e);
        digest_bytes(h, tok, sizeof tok);
        digest_bytes(h, lp, sizeof lp);
        digest_bytes(h, t1, sizeof t1);
        digest_bytes(h, kept, sizeof kept);
        break;
    }
    case 5: { /* controller: a step, then the pending decision and the last history entry */
        aepo_decision d;
        int64_t n;
        memset(&d, 0, sizeof d);
        d.struct_size = sizeof d;
        WL_OK(aepo_controller_step(w->ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.5 + 0.05 * (k % 13), AEPO_CONTROLLER_STEP_NEXT,
                                   &d, &e), &e);
        digest_bytes(h, &d, sizeof d);
        WL_OK(aepo_controller_history_count(w->ctl, &n, &e), &e);
        WL_OK(aepo_controller_history(w->ctl, n - 1, &d, &e), &e);
        digest_bytes(h, &d, sizeof d);
        break;
    }
    case 6: { /* fused forward and backward */
        float X[WL_FN * WL_FD], lp[WL_FN], ent[WL_FN], gl[WL_FN], dX[WL_FN * WL_FD], dW[WL_FV * WL_FD], db[WL_FV];
        double lse[WL_FN];
        aepo_fused_head_inputs in;
        for (i = 0; i < WL_FN * WL_FD; i++) X[i] = w->X[i] * s;
        wl_head_inputs(w, X, w->fmask, &in);
        WL_OK(aepo_fused_head_forward(w->fused, &in, lp, ent, lse, &e), &e);
        for (i = 0; i < WL_FN; i++) gl[i] = 1.0f / (float)(i + 1);
        memset(dW, 0, sizeof dW);
        memset(db, 0, sizeof db);
        WL_OK(aepo_fused_head_backward(w->fused, &in, lse, ent, gl, NULL, dX, dW, db, &e), &e);
        digest_bytes(h, lp, sizeof lp);
        digest_bytes(h, ent, sizeof ent);
        digest_bytes(h, lse, sizeof lse);
        digest_bytes(h, dX, sizeof dX);
        digest_bytes(h, dW, sizeof dW);
        digest_bytes(h, db, sizeof db);
        break;
    }
    default: { /* fused loss and gradients */
        aepo_loss_inputs in;
        aepo_fused_head_inputs hin;
        float X[WL_FN * WL_FD], dX[WL_FN * WL_FD], dW[WL_FV * WL_FD], lp[WL_FN], ent[WL_FN];
        double loss, metrics[AEPO_LOSS_METRIC_COUNT];
        for (i = 0; i < WL_FN * WL_FD; i++) X[i] = w->X[i] * s;
        wl_head_inputs(w, X, NULL, &hin);
        aepo_loss_inputs_init(&in, sizeof in, NULL);
        in.B = 2;
        in.L = WL_FN / 2;
        in.old_logp = w->fold;
        in.advantages = w->fadv;
        in.adv_per_token = 1;
        in.mask = w->fmask;
        in.ref_logp = w->fref;
        memset(dW, 0, sizeof dW);
        WL_OK(aepo_fused_head_loss_and_grad(w->fused, w->loss, &hin, &in, &loss, dX, dW, NULL, metrics,
                                            AEPO_LOSS_METRIC_COUNT, lp, ent, &e), &e);
        digest_bytes(h, &loss, sizeof loss);
        digest_bytes(h, dX, sizeof dX);
        digest_bytes(h, dW, sizeof dW);
        digest_bytes(h, metrics, sizeof metrics);
        digest_bytes(h, lp, sizeof lp);
        break;
    }
    }
}

static inline void worker_call(worker *w, int k) {
    worker_call_into(w, k, &w->digest);
    w->calls_done++;
}

#endif
