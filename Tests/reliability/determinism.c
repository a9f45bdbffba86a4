/* Determinism: bit-identical results across library thread counts, across the batch splits
 * the contract promises, and across runs.
 *
 *   determinism            checks, then prints "digest <hex>" (every output) and
 *                          "blas-digest <hex>" (the fused head's outputs only)
 *
 * Within one run it checks, failing on any difference:
 *   - loss.threads, the kernels' threads argument, sampler.threads and fused.threads in
 *     {1, 2, 3, 4, 8} give the same bytes in every output (shapes large enough that every
 *     count really splits the work);
 *   - the sampler drawing a batch in three calls (row_offset) gives the same bytes as one
 *     call;
 *   - the policy loss in micro-batches with the global counts: every gradient row is the
 *     same bytes as in one call on the whole batch, and the micro-batch losses add up to the
 *     one-call loss within the rounding of a sum of that many terms;
 *   - the logits kernels on a batch split into two calls: the same per-row bytes.
 * `make test` runs the program twice and compares the digests (across runs), and once more
 * with another OPENBLAS_NUM_THREADS to report whether the BLAS thread count changes the
 * fused head (the library does not promise it; see docs/RELIABILITY.md). */
#include "workload.h"

static int failures = 0;
static uint64_t all_digest = 0xcbf29ce484222325ull, blas_digest = 0xcbf29ce484222325ull;

#define SAME(what, a, b, n) do { \
    if (memcmp((a), (b), (n)) != 0) { \
        fprintf(stderr, "determinism: %s differs\n", what); \
        failures++; \
    } \
} while (0)

static const int THREADS[] = {1, 2, 3, 4, 8};
#define NT ((int)(sizeof THREADS / sizeof THREADS[0]))

/* ------------------------------------------------------------------ loss --- */
enum { LB = 64, LL = 2048, LN = LB * LL };

static void loss_inputs(rng *r, float *lp, float *old, float *ref, float *ent, float *adv, uint8_t *mask) {
    int64_t i;
    for (i = 0; i < LN; i++) {
        lp[i] = rng_float(r, -6, -0.01f);
        old[i] = lp[i] + rng_float(r, -0.5f, 0.5f);
        ref[i] = lp[i] + rng_float(r, -0.3f, 0.3f);
        ent[i] = rng_float(r, 0, 4);
        mask[i] = (uint8_t)((i % LL) < LL - (i / LL) * 29);
    }
    for (i = 0; i < LB; i++) adv[i] = rng_float(r, -2, 2);
}

static double run_loss(int threads, const char *mode, int64_t b0, int64_t b1, int64_t gtok, int64_t gseq,
                       const float *lp, const float *old, const float *ref, const float *ent, const float *adv,
                       const uint8_t *mask, float *grad, float *gent, double *metrics) {
    char cfg[256];
    aepo_loss *h;
    aepo_loss_inputs in;
    aepo_error e;
    double loss = 0;
    int64_t o = b0 * LL;
    snprintf(cfg, sizeof cfg,
             "{\"loss\": {\"loss_agg_mode\": \"%s\", \"kl_loss_coef\": 0.02, \"entropy_coeff\": 0.003, "
             "\"threads\": %d}}", mode, threads);
    WL_OK(aepo_loss_create(cfg, strlen(cfg), &h, &e), &e);
    aepo_loss_inputs_init(&in, sizeof in, NULL);
    in.B = b1 - b0;
    in.L = LL;
    in.logp = lp + o;
    in.old_logp = old + o;
    in.ref_logp = ref + o;
    in.entropy = ent + o;
    in.advantages = adv + b0;
    in.mask = mask + o;
    in.global_tokens = gtok;
    in.global_seqs = gseq;
    WL_OK(aepo_loss_compute(h, &in, &loss, grad, gent, metrics, metrics ? AEPO_LOSS_METRIC_COUNT : 0, &e), &e);
    aepo_loss_free(h);
    return loss;
}

static void check_loss(rng *r) {
    float *lp = malloc(LN * 4), *old = malloc(LN * 4), *ref = malloc(LN * 4), *ent = malloc(LN * 4);
    float *g0 = malloc(LN * 4), *ge0 = malloc(LN * 4), *g = malloc(LN * 4), *ge = malloc(LN * 4);
    float adv[LB];
    uint8_t *mask = malloc(LN);
    double m0[AEPO_LOSS_METRIC_COUNT], m[AEPO_LOSS_METRIC_COUNT], l0, l, sum, abs_sum;
    int t, k;
    static const char *const MODES[] = {"token-mean", "seq-mean-token-mean"};
    loss_inputs(r, lp, old, ref, ent, adv, mask);
    for (k = 0; k < 2; k++) {
        l0 = run_loss(1, MODES[k], 0, LB, -1, -1, lp, old, ref, ent, adv, mask, g0, ge0, m0);
        for (t = 1; t < NT; t++) {
            char what[96];
            l = run_loss(THREADS[t], MODES[k], 0, LB, -1, -1, lp, old, ref, ent, adv, mask, g, ge, m);
            snprintf(what, sizeof what, "loss (%s) with loss.threads %d", MODES[k], THREADS[t]);
            SAME(what, &l, &l0, sizeof l);
            SAME(what, m, m0, sizeof m);
            SAME(what, g, g0, LN * 4);
            SAME(what, ge, ge0, LN * 4);
        }
        digest_bytes(&all_digest, &l0, sizeof l0);
        digest_bytes(&all_digest, g0, LN * 4);
        digest_bytes(&all_digest, m0, sizeof m0);

        /* Micro-batches of 5, 17, 30 and 12 rows with the global counts of the whole batch. */
        {
            static const int64_t CUT[] = {0, 5, 22, 52, LB};
            int64_t gtok = (int64_t)m0[AEPO_LOSS_METRIC_N_TOKENS], gseq = (int64_t)m0[AEPO_LOSS_METRIC_N_SEQS];
            int c;
            sum = 0;
            abs_sum = 0;
            for (c = 0; c < 4; c++) {
                double part = run_loss(2, MODES[k], CUT[c], CUT[c + 1], gtok, gseq, lp, old, ref, ent, adv, mask,
                                       g + CUT[c] * LL, ge + CUT[c] * LL, NULL);
                sum += part;
                abs_sum += fabs(part);
            }
            SAME("loss micro-batch gradients", g, g0, LN * 4);
            SAME("loss micro-batch entropy gradients", ge, ge0, LN * 4);
            /* The one call adds the 64 row partials in row order, the micro-batches add them
             * in four groups and then the four sums: the same terms, another association. */
            if (fabs(sum - l0) > 64 * 2.2e-16 * (abs_sum + fabs(l0))) {
                fprintf(stderr, "determinism: micro-batch losses add up to %.17g, one call gives %.17g\n", sum, l0);
                failures++;
            }
            printf("determinism: loss (%s) in 4 micro-batches: gradients bit-identical, losses add up to the "
                   "one-call loss within %.2g (relative)\n", MODES[k], fabs(sum - l0) / fabs(l0));
        }
    }
    free(lp); free(old); free(ref); free(ent); free(g0); free(ge0); free(g); free(ge); free(mask);
}

/* --------------------------------------------------------------- kernels --- */
enum { KB = 4, KL = 128, KN = KB * KL, KV = 1000 };

/* The inputs of batches [b0, b0 + nb) of the [KB, KL, KV] logits at T = 0.8. */
static aepo_logits_inputs kinputs(const float *x, int64_t b0, int64_t nb, const int32_t *tg, const uint8_t *mask,
                                  int64_t threads) {
    aepo_logits_inputs in;
    aepo_error e;
    int64_t o = b0 * KL;
    WL_OK(aepo_logits_inputs_init(&in, sizeof in, &e), &e);
    in.logits = x + o * KV;
    in.B = nb;
    in.L = KL;
    in.V = KV;
    in.stride_b = KL * KV;
    in.stride_l = KV;
    in.targets = tg + o;
    in.mask = mask + o;
    in.temperature = 0.8;
    in.threads = threads;
    return in;
}

static void run_stats(const float *x, int64_t b0, int64_t nb, const int32_t *tg, const uint8_t *mask, int64_t threads,
                      float *lp, float *ent, double *lse, float *t1) {
    aepo_error e;
    int64_t o = b0 * KL;
    aepo_logits_inputs in = kinputs(x, b0, nb, tg, mask, threads);
    WL_OK(aepo_logits_stats(&in, lp + o, ent + o, lse + o, t1 + o, NULL, NULL, NULL, &e), &e);
}

static void check_kernels(rng *r) {
    float *x = malloc((size_t)KN * KV * 4), *out0 = malloc((size_t)KN * KV * 4), *out = malloc((size_t)KN * KV * 4);
    float lp0[KN], ent0[KN], t10[KN], lp[KN], ent[KN], t1[KN], gl[KN], gh[KN];
    double lse0[KN], lse[KN];
    int32_t tg[KN];
    uint8_t mask[KN];
    aepo_error e;
    aepo_logits_inputs in;
    int64_t i;
    int t;
    for (i = 0; i < (int64_t)KN * KV; i++) x[i] = rng_float(r, -8, 8);
    for (i = 0; i < KN; i++) {
        tg[i] = (int32_t)rng_below(r, KV);
        mask[i] = (uint8_t)(i % 7 != 3);
        gl[i] = rng_float(r, -1, 1);
        gh[i] = rng_float(r, -1, 1);
    }
    run_stats(x, 0, KB, tg, mask, 1, lp0, ent0, lse0, t10);
    in = kinputs(x, 0, KB, tg, mask, 1);
    WL_OK(aepo_logits_backward(&in, lse0, ent0, gl, gh, out0, KL * KV, KV, &e), &e);
    for (t = 1; t < NT; t++) {
        char what[64];
        run_stats(x, 0, KB, tg, mask, THREADS[t], lp, ent, lse, t1);
        snprintf(what, sizeof what, "logits_stats with threads %d", THREADS[t]);
        SAME(what, lp, lp0, sizeof lp);
        SAME(what, ent, ent0, sizeof ent);
        SAME(what, lse, lse0, sizeof lse);
        SAME(what, t1, t10, sizeof t1);
        in = kinputs(x, 0, KB, tg, mask, THREADS[t]);
        WL_OK(aepo_logits_backward(&in, lse0, ent0, gl, gh, out, KL * KV, KV, &e), &e);
        snprintf(what, sizeof what, "logits_backward with threads %d", THREADS[t]);
        SAME(what, out, out0, (size_t)KN * KV * 4);
    }
    /* Split into batches [0, 1) and [1, 4). */
    run_stats(x, 0, 1, tg, mask, 2, lp, ent, lse, t1);
    run_stats(x, 1, KB - 1, tg, mask, 3, lp, ent, lse, t1);
    SAME("logits_stats over a split batch", lp, lp0, sizeof lp);
    SAME("logits_stats over a split batch (lse)", lse, lse0, sizeof lse);
    digest_bytes(&all_digest, lp0, sizeof lp0);
    digest_bytes(&all_digest, lse0, sizeof lse0);
    digest_bytes(&all_digest, out0, (size_t)KN * KV * 4);
    free(x); free(out0); free(out);
}

/* --------------------------------------------------------------- sampler --- */
enum { SN = 256, SV = 4096 };

static void run_sampler(int threads, const float *x, int64_t r0, int64_t n, int32_t *tok, float *lp, float *t1,
                        int32_t *kept) {
    char cfg[160];
    aepo_sampler *s;
    aepo_error e;
    double T = 1.1;
    snprintf(cfg, sizeof cfg,
             "{\"sampler\": {\"top_k\": 200, \"top_p\": 0.95, \"min_p\": 0.001, \"seed\": 1234, \"threads\": %d}}",
             threads);
    WL_OK(aepo_sampler_create(cfg, strlen(cfg), &s, &e), &e);
    WL_OK(aepo_sampler_sample(s, x + r0 * SV, n, SV, SV, 17, 3, r0, &T, tok + r0, lp + r0, t1 + r0, kept + r0, &e), &e);
    aepo_sampler_free(s);
}

static void check_sampler(rng *r) {
    float *x = malloc((size_t)SN * SV * 4), lp0[SN], t10[SN], lp[SN], t1[SN];
    int32_t tok0[SN], kept0[SN], tok[SN], kept[SN];
    int64_t i;
    int t;
    for (i = 0; i < (int64_t)SN * SV; i++) x[i] = rng_float(r, -6, 6);
    run_sampler(1, x, 0, SN, tok0, lp0, t10, kept0);
    for (t = 1; t < NT; t++) {
        char what[64];
        run_sampler(THREADS[t], x, 0, SN, tok, lp, t1, kept);
        snprintf(what, sizeof what, "sampler with sampler.threads %d", THREADS[t]);
        SAME(what, tok, tok0, sizeof tok);
        SAME(what, lp, lp0, sizeof lp);
        SAME(what, t1, t10, sizeof t1);
        SAME(what, kept, kept0, sizeof kept);
    }
    run_sampler(2, x, 0, 100, tok, lp, t1, kept);
    run_sampler(1, x, 100, 1, tok, lp, t1, kept);
    run_sampler(3, x, 101, SN - 101, tok, lp, t1, kept);
    SAME("sampler over a batch split into 3 calls", tok, tok0, sizeof tok);
    SAME("sampler over a batch split into 3 calls (logp)", lp, lp0, sizeof lp);
    SAME("sampler over a batch split into 3 calls (kept)", kept, kept0, sizeof kept);
    digest_bytes(&all_digest, tok0, sizeof tok0);
    digest_bytes(&all_digest, lp0, sizeof lp0);
    free(x);
}

/* ------------------------------------------------------------------ fused --- */
enum { FN = 256, FD = 64, FV = 2048 };

typedef struct fused_out {
    float lp[FN], ent[FN], dX[FN * FD], dW[FV * FD], db[FV], flp[FN], fdX[FN * FD], fdW[FV * FD];
    double lse[FN], loss, metrics[AEPO_LOSS_METRIC_COUNT];
} fused_out;

static void run_fused(int threads, const float *X, const float *W, const float *bias, const int32_t *tg,
                      const uint8_t *mask, const float *old, const float *adv, fused_out *o) {
    char cfg[160];
    aepo_fused_head *h;
    aepo_loss *lh;
    aepo_loss_inputs in;
    aepo_fused_head_inputs hin;
    aepo_error e;
    float gl[FN];
    int i;
    snprintf(cfg, sizeof cfg, "{\"fused\": {\"chunk_n\": 32, \"chunk_v\": 512, \"temperature\": 0.9, \"threads\": %d}, "
             "\"loss\": {\"entropy_coeff\": 0.01}}", threads);
    WL_OK(aepo_fused_head_create(cfg, strlen(cfg), &h, &e), &e);
    WL_OK(aepo_loss_create(cfg, strlen(cfg), &lh, &e), &e);
    WL_OK(aepo_fused_head_inputs_init(&hin, sizeof hin, &e), &e);
    hin.X = X;
    hin.W = W;
    hin.bias = bias;
    hin.targets = tg;
    hin.mask = mask;
    hin.N = FN;
    hin.D = FD;
    hin.V = FV;
    WL_OK(aepo_fused_head_forward(h, &hin, o->lp, o->ent, o->lse, &e), &e);
    for (i = 0; i < FN; i++) gl[i] = 1.0f / (float)(1 + i % 13);
    memset(o->dW, 0, sizeof o->dW);
    memset(o->db, 0, sizeof o->db);
    WL_OK(aepo_fused_head_backward(h, &hin, o->lse, o->ent, gl, NULL, o->dX, o->dW, o->db, &e), &e);
    aepo_loss_inputs_init(&in, sizeof in, NULL);
    in.B = 8;
    in.L = FN / 8;
    in.old_logp = old;
    in.advantages = adv;
    in.mask = mask;
    memset(o->fdW, 0, sizeof o->fdW);
    WL_OK(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &o->loss, o->fdX, o->fdW, NULL, o->metrics,
                                        AEPO_LOSS_METRIC_COUNT, o->flp, NULL, &e), &e);
    aepo_loss_free(lh);
    aepo_fused_head_free(h);
}

static void check_fused(rng *r) {
    float *X = malloc(FN * FD * 4), *W = malloc((size_t)FV * FD * 4), bias[FV], old[FN], adv[8];
    int32_t tg[FN];
    uint8_t mask[FN];
    fused_out *o0 = malloc(sizeof *o0), *o = malloc(sizeof *o);
    int i, t;
    for (i = 0; i < FN * FD; i++) X[i] = rng_float(r, -1, 1);
    for (i = 0; i < FV * FD; i++) W[i] = rng_float(r, -0.5f, 0.5f);
    for (i = 0; i < FV; i++) bias[i] = rng_float(r, -0.2f, 0.2f);
    for (i = 0; i < FN; i++) {
        tg[i] = (int32_t)rng_below(r, FV);
        mask[i] = (uint8_t)(i % 11 != 4);
        old[i] = rng_float(r, -9, -6);
    }
    for (i = 0; i < 8; i++) adv[i] = rng_float(r, -1, 1);
    run_fused(1, X, W, bias, tg, mask, old, adv, o0);
    for (t = 1; t < NT; t++) {
        char what[64];
        run_fused(THREADS[t], X, W, bias, tg, mask, old, adv, o);
        snprintf(what, sizeof what, "fused head with fused.threads %d", THREADS[t]);
        SAME(what, o, o0, sizeof *o);
    }
    digest_bytes(&all_digest, o0, sizeof *o0);
    digest_bytes(&blas_digest, o0, sizeof *o0);
    free(X); free(W); free(o0); free(o);
}

int main(void) {
    rng r;
    r.s = 20251008;
    check_loss(&r);
    check_kernels(&r);
    check_sampler(&r);
    check_fused(&r);
    if (failures) {
        fprintf(stderr, "determinism: %d checks FAILED\n", failures);
        return 1;
    }
    printf("determinism: every output is bit-identical for library thread counts 1, 2, 3, 4 and 8, "
           "and over the batch splits\n");
    printf("digest %016llx\n", (unsigned long long)all_digest);
    printf("blas-digest %016llx\n", (unsigned long long)blas_digest);
    return 0;
}
