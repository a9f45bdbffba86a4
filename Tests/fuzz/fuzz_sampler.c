/* Fuzzes aepo_sampler_sample with a sampler config, shapes, strides, logits, coordinates,
 * a per-call temperature and optional outputs decoded from the input.
 *
 * Invariants beyond fz_check:
 *   - on success each token lies in [0, V) on a finite logit, kept is in [1, V] (and
 *     <= top_k when top-k is on), the log-probs are finite and <= 0; greedy returns the
 *     first argmax with log-prob 0 and kept 1;
 *   - NaN or +Inf in any row, or a row without a finite logit, fails, and the error names a
 *     row in [0, N);
 *   - the draw is a pure function of (seed, step, position, row_offset + i) and the row:
 *     calling again, splitting the rows into two calls, and a sampler with another thread
 *     count all give the same bits. */
#include "fuzz.h"

typedef struct outputs {
    int32_t *tokens, *kept;
    float *logp, *logp_t1;
} outputs;

static void alloc_outputs(outputs *o, int64_t n, uint8_t flags) {
    o->tokens = (flags & 1) ? NULL : (int32_t *)fz_alloc(n, sizeof(int32_t), 0);
    o->logp = (flags & 2) ? (float *)fz_alloc(n, sizeof(float), 0) : NULL;
    o->logp_t1 = (flags & 4) ? (float *)fz_alloc(n, sizeof(float), 0) : NULL;
    o->kept = (flags & 8) ? (int32_t *)fz_alloc(n, sizeof(int32_t), 0) : NULL;
}

static void free_outputs(outputs *o) {
    free(o->tokens);
    free(o->logp);
    free(o->logp_t1);
    free(o->kept);
}

static int same(const void *a, const void *b, int64_t n, size_t size) {
    if (!a || !b) return 1;
    return n <= 0 || memcmp(a, b, (size_t)n * size) == 0;
}

static int64_t coordinate(fz *f) {
    uint8_t c = fz_u8(f);
    if (c < 224) return c % 7;
    return FZ_EDGE_SIZES[c % FZ_N_EDGE_SIZES];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    static const char *const TOP_P[] = {"1", "0.9", "0.5", "1e-09"};
    static const char *const MIN_P[] = {"0", "0.1", "0.9", "1e-30"};
    char json[256];
    aepo_sampler *s = NULL, *s2 = NULL;
    aepo_error eb, *e;
    int32_t rc;
    uint8_t c = fz_u8(&f);
    int greedy = (c & 1) != 0;
    int64_t top_k = (c & 2) ? fz_below(&f, 20) : 0;
    int threads = 1 + (int)fz_below(&f, 3);
    int64_t n, v, stride, extent = -1, step, position, row_offset, i, j;
    uint8_t flags;
    float *logits = NULL;
    double t_call = 1.0;
    const double *tp = NULL;
    outputs out;
    int must_fail = 0;

    snprintf(json, sizeof json,
             "{\"sampler\": {\"temperature\": %s, \"top_k\": %lld, \"top_p\": %s, \"min_p\": %s, \"greedy\": %s, "
             "\"seed\": %u, \"threads\": %d}}",
             (c & 4) ? "0.7" : ((c & 8) ? "1" : "1.6"), (long long)top_k, TOP_P[fz_below(&f, 4)],
             MIN_P[fz_below(&f, 4)], greedy ? "true" : "false", (unsigned)fz_u32(&f), threads);
    rc = aepo_sampler_create(json, strlen(json), &s, &eb);
    fz_check("aepo_sampler_create", rc, &eb);
    FZ_ASSERT(rc == AEPO_OK, "sampler config rejected: %s", eb.message);

    n = fz_size(&f, 5);
    v = fz_size(&f, 16);
    switch (fz_below(&f, 4)) {
    case 0: stride = v; break;
    case 1: stride = fz_add(v, fz_below(&f, 4)); break;
    case 2: stride = fz_size(&f, 20); break;
    default: stride = fz_add(fz_size(&f, 2), -1); break;
    }
    if (n >= 0 && v >= 0 && stride >= 0) {
        if (n == 0) extent = 0;
        else if (v <= FZ_MAX_ELEMS && stride <= FZ_MAX_ELEMS && (n - 1) <= FZ_MAX_ELEMS / (stride > 0 ? stride : 1)) {
            extent = (n - 1) * stride + v;
            if (extent > FZ_MAX_ELEMS) extent = -1;
        }
    }
    flags = fz_u8(&f);
    if (extent >= 0 && !(flags & 0x10)) {
        logits = (float *)fz_alloc(extent, sizeof(float), 0);
        for (i = 0; i < extent; i++) logits[i] = (flags & 0x20) ? fz_float(&f, -6.0f, 6.0f) : fz_finite(&f, -6.0f, 6.0f);
        if ((flags & 0x40) && extent > 0)
            for (i = 0; i < extent; i++) if (fz_u8(&f) < 128) logits[i] = -INFINITY;
    }
    step = coordinate(&f);
    position = coordinate(&f);
    row_offset = coordinate(&f);
    if (flags & 0x80) {
        t_call = fz_double(&f, 0.05, 3.0);
        tp = &t_call;
    }
    alloc_outputs(&out, extent >= 0 ? n : -1, fz_u8(&f));

    e = fz_err(&f, &eb);
    rc = aepo_sampler_sample(s, logits, n, v, stride, step, position, row_offset, tp, out.tokens, out.logp,
                             out.logp_t1, out.kept, e);
    fz_check("aepo_sampler_sample", rc, e);

    if (tp && (!(t_call >= 1e-30) || !isfinite(t_call))) must_fail = 1;
    if (logits && n > 0 && v > 0 && stride >= v && step >= 0 && position >= 0 && row_offset >= 0) {
        for (i = 0; i < n; i++) {
            int any = 0;
            for (j = 0; j < v; j++) {
                float x = logits[i * stride + j];
                if (isnan(x) || x == INFINITY) must_fail = 1;
                if (isfinite(x)) any = 1;
            }
            if (!any) must_fail = 1;
        }
    }
    if (must_fail) FZ_ASSERT(rc != AEPO_OK, "sample succeeded on input it must reject");
    if (rc != AEPO_OK && e && e->index != -1) FZ_ASSERT(e->index >= 0 && e->index < n, "error names row %lld",
                                                        (long long)e->index);

    if (rc == AEPO_OK && n > 0) {
        outputs a, b;
        int64_t h = n / 2;
        for (i = 0; i < n; i++) {
            const float *x = logits + i * stride;
            int32_t t = out.tokens[i];
            FZ_ASSERT(t >= 0 && t < v && isfinite(x[t]), "row %lld drew %d", (long long)i, (int)t);
            if (out.kept) FZ_ASSERT(out.kept[i] >= 1 && out.kept[i] <= v && (top_k == 0 || greedy || out.kept[i] <= top_k),
                                    "row %lld kept %d", (long long)i, (int)out.kept[i]);
            if (out.logp) FZ_ASSERT(isfinite(out.logp[i]) && out.logp[i] <= 1e-6f, "row %lld logp %g", (long long)i,
                                    out.logp[i]);
            if (out.logp_t1) FZ_ASSERT(isfinite(out.logp_t1[i]) && out.logp_t1[i] <= 1e-6f, "row %lld logp_t1 %g",
                                       (long long)i, out.logp_t1[i]);
            if (greedy) {
                for (j = 0; j < v; j++)
                    FZ_ASSERT(x[j] < x[t] || (x[j] == x[t] && j >= t), "greedy row %lld is not the first argmax",
                              (long long)i);
                if (out.logp) FZ_ASSERT(out.logp[i] == 0, "greedy logp %g", out.logp[i]);
                if (out.kept) FZ_ASSERT(out.kept[i] == 1, "greedy kept %d", (int)out.kept[i]);
            }
        }
        /* The same call again, then the rows in two calls. */
        alloc_outputs(&a, n, 0x0e);
        rc = aepo_sampler_sample(s, logits, n, v, stride, step, position, row_offset, tp, a.tokens, a.logp,
                                 a.logp_t1, a.kept, NULL);
        FZ_ASSERT(rc == AEPO_OK && same(a.tokens, out.tokens, n, 4) && same(a.logp, out.logp, n, 4) &&
                  same(a.logp_t1, out.logp_t1, n, 4) && same(a.kept, out.kept, n, 4), "a second call differs");
        alloc_outputs(&b, n, 0x0e);
        if (h > 0 && row_offset <= INT64_MAX - n) {
            rc = aepo_sampler_sample(s, logits, h, v, stride, step, position, row_offset, tp, b.tokens, b.logp,
                                     b.logp_t1, b.kept, NULL);
            FZ_ASSERT(rc == AEPO_OK, "the first half failed");
            rc = aepo_sampler_sample(s, logits + h * stride, n - h, v, stride, step, position, row_offset + h, tp,
                                     b.tokens + h, b.logp + h, b.logp_t1 + h, b.kept + h, NULL);
            FZ_ASSERT(rc == AEPO_OK, "the second half failed");
            FZ_ASSERT(same(a.tokens, b.tokens, n, 4) && same(a.logp, b.logp, n, 4) &&
                      same(a.logp_t1, b.logp_t1, n, 4) && same(a.kept, b.kept, n, 4),
                      "splitting the rows changes the draw");
        }
        /* Another thread count. */
        {
            char json2[300];
            char *p = strstr(json, "\"threads\": ");
            size_t at = (size_t)(p - json);
            memcpy(json2, json, at);
            snprintf(json2 + at, sizeof json2 - at, "\"threads\": %d}}", threads == 1 ? 3 : 1);
            FZ_ASSERT(aepo_sampler_create(json2, strlen(json2), &s2, NULL) == AEPO_OK, "second sampler");
            rc = aepo_sampler_sample(s2, logits, n, v, stride, step, position, row_offset, tp, b.tokens, b.logp,
                                     b.logp_t1, b.kept, NULL);
            FZ_ASSERT(rc == AEPO_OK && same(a.tokens, b.tokens, n, 4) && same(a.logp, b.logp, n, 4) &&
                      same(a.logp_t1, b.logp_t1, n, 4) && same(a.kept, b.kept, n, 4),
                      "the thread count changes the draw");
            aepo_sampler_free(s2);
        }
        free_outputs(&a);
        free_outputs(&b);
    }
    free_outputs(&out);
    free(logits);
    aepo_sampler_free(s);
    aepo_sampler_free(NULL);
    return 0;
}
