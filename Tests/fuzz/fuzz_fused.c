/* Fuzzes the fused LM head: aepo_fused_head_forward, aepo_fused_head_backward and
 * aepo_fused_head_loss_and_grad, with a head config (chunks, temperature, threads), shapes,
 * hidden states, weights, bias, targets, masks, upstream gradients, loss inputs, the head
 * inputs' struct_size and optional or overlapping outputs decoded from the input.
 *
 * Invariants beyond fz_check:
 *   - NaN/Inf in X under mask = 1, in W or in bias, a mask value other than 0/1 and a target
 *     outside [0, V) under mask = 1 fail;
 *   - on success every written output is finite, log p <= 0, entropy >= 0, rows with
 *     mask = 0 get 0 (dX too), and the loss and metrics are finite;
 *   - forward does not depend on fused.threads (bit for bit);
 *   - an output that overlaps an input fails;
 *   - a head-inputs struct_size below the first version's fails naming struct_size, and a
 *     NULL head-inputs struct fails naming "in";
 *   - loss_and_grad fails when the head's N is not B * L of the loss inputs, when the head's
 *     mask is neither NULL nor the loss inputs' mask, and when the loss inputs carry logp or
 *     entropy. */
#include "fuzz.h"

typedef struct head {
    aepo_fused_head *h;
    char json[256];
    int threads;
} head;

static void make_head(fz *f, head *hd) {
    static const char *const TEMPS[] = {"1", "0.5", "2", "1e-30", "1e30", "0.7"};
    aepo_error e;
    int32_t rc;
    uint8_t c = fz_u8(f);
    hd->threads = 1 + (int)fz_below(f, 3);
    snprintf(hd->json, sizeof hd->json,
             "{\"fused\": {\"chunk_n\": %d, \"chunk_v\": %d, \"temperature\": %s, \"threads\": %d}}",
             (c & 1) ? 128 : 1 + (int)fz_below(f, 4), (c & 2) ? 8192 : 1 + (int)fz_below(f, 6),
             TEMPS[fz_below(f, 6)], hd->threads);
    hd->h = NULL;
    rc = aepo_fused_head_create(hd->json, strlen(hd->json), &hd->h, &e);
    fz_check("aepo_fused_head_create", rc, &e);
    FZ_ASSERT(rc == AEPO_OK, "fused config rejected: %s", e.message);
}

static aepo_fused_head_inputs head_inputs(const float *X, const float *W, const float *bias, const int32_t *targets,
                                          const uint8_t *mask, int64_t N, int64_t D, int64_t V) {
    aepo_fused_head_inputs in;
    FZ_ASSERT(aepo_fused_head_inputs_init(&in, sizeof in, NULL) == AEPO_OK, "aepo_fused_head_inputs_init failed");
    FZ_ASSERT(in.struct_size == sizeof in && in.X == NULL && in.mask == NULL && in.N == 0 && in.V == 0,
              "aepo_fused_head_inputs_init does not zero the struct");
    in.X = X;
    in.W = W;
    in.bias = bias;
    in.targets = targets;
    in.mask = mask;
    in.N = N;
    in.D = D;
    in.V = V;
    return in;
}

static int all_finite(const float *p, int64_t n) {
    int64_t i;
    for (i = 0; p && i < n; i++) if (!isfinite(p[i])) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    head hd;
    aepo_error eb, *e;
    int64_t N, D, V, nd, vd, i, k;
    uint32_t flags;
    float *X = NULL, *W = NULL, *bias = NULL, *logp = NULL, *ent = NULL, *dX = NULL, *dW = NULL, *db = NULL;
    float *gl = NULL, *gh = NULL;
    double *lse = NULL;
    int32_t *targets = NULL;
    uint8_t *mask = NULL;
    int32_t rc;
    int must_fail = 0, op;
    aepo_fused_head_inputs hin;

    make_head(&f, &hd);
    N = fz_size(&f, 6);
    D = fz_size(&f, 5);
    V = fz_size(&f, 9);
    flags = fz_u32(&f);
    op = (int)(flags % 3);
    if (getenv("AEPO_FUZZ_TRACE"))
        fprintf(stderr, "%s op=%d N=%lld D=%lld V=%lld flags=%x\n", hd.json, op, (long long)N, (long long)D,
                (long long)V, flags);
    nd = fz_elems(N, D);
    vd = fz_elems(V, D);
    /* With D = 0, X and W are empty whatever N and V are, and a valid call still makes N * V
     * logits: real work, not a bug. Keep it to what a fuzz input can afford. */
    if (N > 0 && V > 0 && (N > (1 << 22) / V)) {
        aepo_fused_head_free(hd.h);
        return 0;
    }
    if (nd >= 0 && !(flags & 4)) X = fz_floats(&f, nd, -2.0f, 2.0f, 0);
    if (vd >= 0 && !(flags & 8)) W = fz_floats(&f, vd, -2.0f, 2.0f, 0);
    if (V >= 0 && V <= FZ_MAX_ELEMS && (flags & 16)) bias = fz_floats(&f, V, -2.0f, 2.0f, 0);
    if (N >= 0 && N <= FZ_MAX_ELEMS) {
        if (!(flags & 32)) targets = fz_targets(&f, N, V);
        if (!(flags & 64)) mask = fz_mask(&f, N, flags & 128);
    }

    /* What must fail whatever the call: bad values under mask = 1, non-finite W or bias. */
    if (N > 0 && N <= FZ_MAX_ELEMS && D >= 0 && V >= 0 && nd >= 0 && vd >= 0) {
        for (i = 0; mask && i < N; i++) if (mask[i] > 1) must_fail = 1;
        if (!must_fail) {
            for (i = 0; i < N; i++) {
                if (mask && mask[i] == 0) continue;
                if (targets && (targets[i] < 0 || targets[i] >= V)) must_fail = 1;
                for (k = 0; X && k < D; k++) if (!isfinite(X[i * D + k])) must_fail = 1;
            }
            if (W && !all_finite(W, vd)) must_fail = 1;
            if (bias && !all_finite(bias, V)) must_fail = 1;
        }
    }

    hin = head_inputs(X, W, bias, targets, mask, N, D, V);

    if (op == 0) {
        /* ---- forward ---- */
        const aepo_fused_head_inputs *hinp = &hin;
        int struct_case = -1;
        if (N >= 0 && N <= FZ_MAX_ELEMS) {
            if (flags & 0x100) logp = (float *)fz_alloc(N, sizeof(float), 0);
            if (flags & 0x200) ent = (float *)fz_alloc(N, sizeof(float), 0);
            if (!(flags & 0x400)) lse = (double *)fz_alloc(N, sizeof(double), 0);
        }
        if ((flags & 0x800) && X && logp && nd >= N && N > 0) {
            free(logp); /* logp inside X: an overlap */
            logp = NULL;
            e = fz_err(&f, &eb);
            rc = aepo_fused_head_forward(hd.h, &hin, X, ent, lse, e);
            fz_check("aepo_fused_head_forward", rc, e);
            FZ_ASSERT(rc != AEPO_OK, "forward accepted logp overlapping X");
            goto done;
        }
        /* Now and then a struct_size below the first version's, or no struct at all. */
        if ((flags & 0x6000) == 0x6000) {
            uint8_t c = fz_u8(&f);
            if (c >= 224) struct_case = c % 2;
        }
        if (struct_case == 0) hin.struct_size = (size_t)fz_below(&f, (int64_t)sizeof hin);
        if (struct_case == 1) hinp = NULL;
        e = fz_err(&f, &eb);
        rc = aepo_fused_head_forward(hd.h, hinp, logp, ent, lse, e);
        fz_check("aepo_fused_head_forward", rc, e);
        if (must_fail) FZ_ASSERT(rc != AEPO_OK, "forward succeeded on input it must reject");
        if (struct_case == 0) {
            FZ_ASSERT(rc == AEPO_ERR_INVALID_ARGUMENT, "forward accepted struct_size %zu", hin.struct_size);
            if (e) FZ_ASSERT(strcmp(e->argument, "struct_size") == 0, "a bad struct_size named %s", e->argument);
        }
        if (struct_case == 1) {
            FZ_ASSERT(rc == AEPO_ERR_NULL_POINTER, "forward accepted in = NULL");
            if (e) FZ_ASSERT(strcmp(e->argument, "in") == 0, "in = NULL named %s", e->argument);
        }
        if (rc == AEPO_OK) {
            for (i = 0; i < N; i++) {
                int on = !mask || mask[i] == 1;
                if (logp) FZ_ASSERT(isfinite(logp[i]) && logp[i] <= 1e-4f * (1 + fabsf(logp[i])) && (on || logp[i] == 0),
                                    "logp[%lld] = %g", (long long)i, logp[i]);
                if (ent) FZ_ASSERT(isfinite(ent[i]) && ent[i] >= -1e-4f && (on || ent[i] == 0), "entropy[%lld] = %g",
                                   (long long)i, ent[i]);
                if (lse) FZ_ASSERT(isfinite(lse[i]) && (on || lse[i] == 0), "lse[%lld] = %g", (long long)i, lse[i]);
            }
            if (lse && N > 0 && (flags & 0x1000)) {
                /* The same call on a head with another thread count. */
                aepo_fused_head *h2 = NULL;
                char json2[256];
                double *lse2 = (double *)fz_alloc(N, sizeof(double), 0);
                char *p = strstr(hd.json, "\"threads\": ");
                size_t at = (size_t)(p - hd.json);
                memcpy(json2, hd.json, at);
                snprintf(json2 + at, sizeof json2 - at, "\"threads\": %d}}", hd.threads == 1 ? 3 : 1);
                FZ_ASSERT(aepo_fused_head_create(json2, strlen(json2), &h2, NULL) == AEPO_OK, "second head");
                FZ_ASSERT(aepo_fused_head_forward(h2, &hin, NULL, NULL, lse2, NULL) == AEPO_OK,
                          "forward failed with another thread count");
                FZ_ASSERT(memcmp(lse, lse2, (size_t)N * sizeof(double)) == 0, "forward depends on fused.threads");
                free(lse2);
                aepo_fused_head_free(h2);
            }
        }
    } else if (op == 1) {
        /* ---- backward ---- */
        int forward_ok = 0;
        if (N >= 0 && N <= FZ_MAX_ELEMS) {
            lse = (double *)fz_alloc(N, sizeof(double), 0);
            ent = (float *)fz_alloc(N, sizeof(float), 0);
            if (!(flags & 0x100))
                forward_ok = aepo_fused_head_forward(hd.h, &hin, NULL, ent, lse, NULL) == AEPO_OK;
            if (!forward_ok)
                for (i = 0; i < N; i++) {
                    lse[i] = fz_double(&f, -3.0, 10.0);
                    ent[i] = fz_float(&f, 0.0f, 3.0f);
                }
            if (!(flags & 0x200)) gl = fz_floats(&f, N, -2.0f, 2.0f, 0);
            if (flags & 0x400) gh = fz_floats(&f, N, -2.0f, 2.0f, 0);
            if (flags & 0x800) { free(lse); lse = NULL; }
            if (flags & 0x1000) { free(ent); ent = NULL; }
        }
        if (nd >= 0 && !(flags & 0x2000)) dX = (float *)fz_alloc(nd, sizeof(float), 0);
        if (vd >= 0 && (flags & 0x4000)) {
            dW = (float *)fz_alloc(vd, sizeof(float), 0);
            for (i = 0; i < vd; i++) dW[i] = fz_finite(&f, -1.0f, 1.0f);
        }
        if (V >= 0 && V <= FZ_MAX_ELEMS && (flags & 0x8000)) {
            db = (float *)fz_alloc(V, sizeof(float), 0);
            for (i = 0; i < V; i++) db[i] = fz_finite(&f, -1.0f, 1.0f);
        }
        if (getenv("AEPO_FUZZ_TRACE")) {
            fprintf(stderr, "%s N=%lld D=%lld V=%lld flags=%x forward_ok=%d\n", hd.json, (long long)N, (long long)D,
                    (long long)V, flags, forward_ok);
            for (i = 0; i < N; i++) {
                fprintf(stderr, "  row %lld mask %d target %d lse %g ent %g gl %g gh %g X:", (long long)i,
                        mask ? mask[i] : -1, targets ? targets[i] : -1, lse ? lse[i] : 0, ent ? ent[i] : 0,
                        gl ? gl[i] : 0, gh ? gh[i] : 0);
                for (k = 0; X && k < D; k++) fprintf(stderr, " %g", X[i * D + k]);
                fputc('\n', stderr);
            }
            for (i = 0; W && i < vd; i++) fprintf(stderr, "  W[%lld] = %g\n", (long long)i, W[i]);
            for (i = 0; bias && i < V; i++) fprintf(stderr, "  bias[%lld] = %g\n", (long long)i, bias[i]);
        }
        e = fz_err(&f, &eb);
        if ((flags & 0x10000) && dX && W && nd > 0 && vd > 0) {
            /* dW = W: an output aliasing an input. */
            rc = aepo_fused_head_backward(hd.h, &hin, lse, ent, gl, gh, dX, W, db, e);
            fz_check("aepo_fused_head_backward", rc, e);
            FZ_ASSERT(rc != AEPO_OK, "backward accepted dW == W");
            goto done;
        }
        rc = aepo_fused_head_backward(hd.h, &hin, lse, ent, gl, gh, dX, dW, db, e);
        fz_check("aepo_fused_head_backward", rc, e);
        if (must_fail) FZ_ASSERT(rc != AEPO_OK, "backward succeeded on input it must reject");
        if (rc == AEPO_OK) {
            for (i = 0; i < N; i++) {
                int on = !mask || mask[i] == 1;
                if (on && gl) FZ_ASSERT(isfinite(gl[i]), "backward succeeded with grad_logp[%lld] = %g", (long long)i, gl[i]);
                if (on && gh) FZ_ASSERT(isfinite(gh[i]), "backward succeeded with grad_entropy[%lld] = %g", (long long)i, gh[i]);
                for (k = 0; dX && k < D; k++) {
                    FZ_ASSERT(isfinite(dX[i * D + k]), "dX[%lld, %lld] = %g", (long long)i, (long long)k, dX[i * D + k]);
                    if (!on) FZ_ASSERT(dX[i * D + k] == 0, "dX row %lld under mask = 0 is not 0", (long long)i);
                }
            }
            FZ_ASSERT(all_finite(dW, vd) && all_finite(db, V), "dW or dbias is not finite");
        }
    } else {
        /* ---- loss_and_grad ---- */
        aepo_loss *lh = NULL;
        aepo_loss_inputs in;
        double loss = 7.0, metrics[AEPO_LOSS_METRIC_COUNT];
        float *old = NULL, *adv = NULL;
        uint8_t *mask_copy = NULL;
        int shape_ok;
        const char *lcfg = (flags & 0x100) ? "{\"loss\": {\"loss_agg_mode\": \"seq-mean-token-mean\", "
                                              "\"entropy_coeff\": 0.01}}"
                                            : "{\"regularizer\": {\"combine\": \"weighted\"}}";
        int64_t B = 1, L = N;
        FZ_ASSERT(aepo_loss_create(lcfg, strlen(lcfg), &lh, NULL) == AEPO_OK, "loss handle");
        if (N > 1 && (flags & 0x200)) { B = 2; L = N / 2; }   /* N odd: B * L != N */
        if (flags & 0x400) B = fz_size(&f, 4);
        aepo_loss_inputs_init(&in, sizeof in, NULL);
        in.B = B;
        in.L = L;
        if (N >= 0 && N <= FZ_MAX_ELEMS) {
            old = fz_floats(&f, N, -6.0f, 0.0f, 0);
            adv = (float *)fz_alloc(N, sizeof(float), 0);
            for (i = 0; i < N; i++) adv[i] = fz_float(&f, -2.0f, 2.0f);
        }
        if (B >= 0 && L >= 0 && (B == 0 || L <= INT64_MAX / B) && B * L == N) {
            in.old_logp = old;
            in.advantages = adv;
            in.adv_per_token = 1;
            in.mask = mask;
            if (mask && B > 0 && B <= FZ_MAX_ELEMS && (flags & 0x800)) {
                uint8_t *reg = (uint8_t *)fz_alloc(B, 1, 0);
                for (i = 0; i < B; i++) reg[i] = (uint8_t)(fz_u8(&f) & 1);
                in.reg_rows = reg;
            }
        }
        if (flags & 0x1000) in.logp = old; /* must be NULL for the fused loss */
        /* The head's mask: NULL (the loss inputs' mask applies) or that same pointer; now and
         * then a copy of it, which is another mask as far as the call knows, or loss inputs
         * that carry the entropy the head computes. */
        hin.mask = NULL;
        if (flags & 0x40000) {
            uint8_t c = fz_u8(&f);
            if (c < 128) {
                hin.mask = in.mask;
            } else if (c >= 240 && (c & 1)) {
                in.entropy = old;
            } else if (c >= 240 && mask && N >= 0 && N <= FZ_MAX_ELEMS) {
                mask_copy = (uint8_t *)fz_alloc(N, 1, 0);
                memcpy(mask_copy, mask, (size_t)N);
                hin.mask = mask_copy;
            }
        }
        if (nd >= 0 && !(flags & 0x2000)) dX = (float *)fz_alloc(nd, sizeof(float), 0);
        if (vd >= 0 && (flags & 0x4000)) dW = (float *)calloc(vd > 0 ? (size_t)vd : 1, sizeof(float));
        if (V >= 0 && V <= FZ_MAX_ELEMS && (flags & 0x8000)) db = (float *)calloc(V > 0 ? (size_t)V : 1, sizeof(float));
        if (N >= 0 && N <= FZ_MAX_ELEMS && (flags & 0x10000)) {
            logp = (float *)fz_alloc(N, sizeof(float), 0);
            ent = (float *)fz_alloc(N, sizeof(float), 0);
        }
        e = fz_err(&f, &eb);
        rc = aepo_fused_head_loss_and_grad(hd.h, (flags & 0x20000) ? NULL : lh, &hin, &in, &loss, dX, dW, db, metrics,
                                           AEPO_LOSS_METRIC_COUNT, logp, ent, e);
        fz_check("aepo_fused_head_loss_and_grad", rc, e);
        shape_ok = B >= 0 && L >= 0 && (B == 0 || L <= INT64_MAX / B) && B * L == N;
        if (!shape_ok) FZ_ASSERT(rc != AEPO_OK, "loss_and_grad accepted N = %lld with B = %lld, L = %lld",
                                 (long long)N, (long long)B, (long long)L);
        if (hin.mask && hin.mask != in.mask) FZ_ASSERT(rc != AEPO_OK, "loss_and_grad accepted another head mask");
        if (in.logp || in.entropy) FZ_ASSERT(rc != AEPO_OK, "loss_and_grad accepted loss_in->logp or entropy");
        if (in.mask == mask && mask) {
            for (i = 0; i < N; i++)
                if (mask[i] == 1 && (!isfinite(old[i]) || !isfinite(adv[i])) &&
                    !(in.reg_rows && in.reg_rows[L > 0 ? i / L : 0] == 1 && isfinite(old[i])))
                    must_fail = 1;
        }
        if (must_fail && in.mask) FZ_ASSERT(rc != AEPO_OK, "loss_and_grad succeeded on input it must reject");
        if (rc == AEPO_OK) {
            FZ_ASSERT(isfinite(loss), "loss %g", loss);
            for (k = 0; k < AEPO_LOSS_METRIC_COUNT; k++) FZ_ASSERT(isfinite(metrics[k]), "metric %lld", (long long)k);
            FZ_ASSERT(all_finite(dX, nd) && all_finite(dW, vd) && all_finite(db, V) && all_finite(logp, N) &&
                      all_finite(ent, N), "an output of loss_and_grad is not finite");
            for (i = 0; mask && i < N; i++)
                if (mask[i] == 0) {
                    for (k = 0; dX && k < D; k++) FZ_ASSERT(dX[i * D + k] == 0, "dX under mask = 0");
                    FZ_ASSERT(!logp || logp[i] == 0, "logp under mask = 0");
                }
        }
        free((void *)in.reg_rows);
        free(mask_copy);
        free(old);
        free(adv);
        aepo_loss_free(lh);
    }

done:
    free(X); free(W); free(bias); free(logp); free(ent); free(dX); free(dW); free(db); free(gl); free(gh);
    free(lse); free(targets); free(mask);
    aepo_fused_head_free(hd.h);
    return 0;
}
