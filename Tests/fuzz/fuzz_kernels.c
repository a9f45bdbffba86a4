/* Fuzzes the logits kernels, aepo_logits_stats and aepo_logits_backward, over strided
 * [B, L, V] views with shapes, strides (a negative one meaning contiguous), values, masks,
 * targets, temperatures, thread counts, the inputs struct's struct_size and optional outputs
 * decoded from the input. Backward runs either on the lse and entropy that stats produced
 * (the contract's use) or on decoded ones, and writes into a separate view, in place, or
 * into a buffer that overlaps the logits.
 *
 * Invariants beyond fz_check:
 *   - stats: on success every written output is finite, masked rows are 0, entropy >= 0,
 *     log p <= 0, count is the number of rows with mask = 1; NaN or +Inf in a row with
 *     mask = 1, an all -Inf row, a mask value other than 0/1 or a target out of [0, V) where
 *     targets are needed fail; the one non-finite output allowed is log p = -Inf (and
 *     nll_sum = +Inf) of a target whose logit is -Inf; a failure names a row inside [0, B*L);
 *     a struct_size below the first version's, or extra bytes that are not 0, fail naming
 *     struct_size, and a NULL inputs struct fails naming "in";
 *   - backward: on success every output element is finite and rows with mask = 0 or zero
 *     upstream gradients are 0; NaN/Inf upstream gradients under mask = 1 fail; a partial
 *     overlap of out and logits fails;
 *   - the results of stats do not depend on the thread count, and a negative stride gives
 *     the bits of the contiguous stride written out (both compared bit for bit). */
#include "fuzz.h"

typedef struct view {
    int64_t B, L, V, sb, sl; /* the strides as passed */
    int64_t eb, el;         /* the strides they mean: a negative one is contiguous */
    int64_t extent;         /* elements, or -1 when it does not fit FZ_MAX_ELEMS */
} view;

static int64_t extent_of(const view *v) {
    int64_t n = fz_elems(v->B, v->L), e;
    if (n < 0 || v->V < 0 || v->eb < 0 || v->el < 0) return -1;
    if (n == 0) return 0;
    if (v->V > FZ_MAX_ELEMS) return -1;
    e = v->V;
    if (v->B > 1) {
        if (v->eb > FZ_MAX_ELEMS) return -1;
        e += (v->B - 1) * v->eb;
    }
    if (v->L > 1) {
        if (v->el > FZ_MAX_ELEMS) return -1;
        e += (v->L - 1) * v->el;
    }
    return e <= FZ_MAX_ELEMS ? e : -1;
}

/* Resolves the strides and the extent after sb or sl changed. */
static void settle(view *v) {
    v->el = v->sl < 0 ? v->V : v->sl;
    v->eb = v->sb < 0 ? fz_mul(v->L, v->V) : v->sb;
    v->extent = extent_of(v);
}

static int64_t row_offset(const view *v, int64_t r) {
    int64_t b = v->L > 0 ? r / v->L : 0, l = v->L > 0 ? r % v->L : 0;
    return (v->B > 1 ? b * v->eb : 0) + (v->L > 1 ? l * v->el : 0);
}

/* Rows of the view overlap (then the library must refuse it). */
static int rows_overlap(const view *v) {
    int64_t n = v->B * v->L, i, j;
    if (n <= 1) return 0;
    for (i = 0; i < n; i++)
        for (j = i + 1; j < n; j++) {
            int64_t a = row_offset(v, i), b = row_offset(v, j);
            if (a < b + v->V && b < a + v->V) return 1;
        }
    return 0;
}

static void decode_view(fz *f, view *v) {
    v->B = fz_size(f, 3);
    v->L = fz_size(f, 4);
    v->V = fz_size(f, 12);
    switch (fz_below(f, 6)) {
    case 0: v->sl = v->V; v->sb = fz_mul(v->L, v->V); break;               /* contiguous */
    case 1: /* padded */
        v->sl = fz_add(v->V, fz_below(f, 3));
        v->sb = fz_add(fz_mul(v->L, v->sl), fz_below(f, 5));
        break;
    case 2: v->sb = v->V; v->sl = fz_mul(v->B, v->V); break;               /* batch-minor */
    case 3: v->sl = v->V; v->sb = fz_mul(fz_add(v->L, 1), v->V); break;    /* shifted logits[:, :-1] */
    case 4: v->sb = fz_size(f, 20); v->sl = fz_size(f, 20); break;
    default: v->sb = fz_add(fz_size(f, 2), -1); v->sl = fz_add(fz_size(f, 2), -1); break; /* small, maybe negative */
    }
    settle(v);
}

/* The inputs struct of a view, with room for a caller's newer, larger version. */
typedef union kinputs {
    aepo_logits_inputs in;
    unsigned char raw[sizeof(aepo_logits_inputs) + 8];
} kinputs;

static void fill_inputs(kinputs *k, const view *v, const float *logits, const int32_t *targets, const uint8_t *mask,
                        double T, int64_t threads) {
    memset(k, 0, sizeof *k);
    FZ_ASSERT(aepo_logits_inputs_init(&k->in, sizeof k->in, NULL) == AEPO_OK, "aepo_logits_inputs_init failed");
    FZ_ASSERT(k->in.struct_size == sizeof k->in && k->in.temperature == 1 && k->in.threads == 1 &&
              k->in.stride_b < 0 && k->in.stride_l < 0 && k->in.logits == NULL, "aepo_logits_inputs_init defaults");
    k->in.logits = logits;
    k->in.B = v->B;
    k->in.L = v->L;
    k->in.V = v->V;
    k->in.stride_b = v->sb;
    k->in.stride_l = v->sl;
    k->in.targets = targets;
    k->in.mask = mask;
    k->in.temperature = T;
    k->in.threads = threads;
}

static double decode_temperature(fz *f) {
    uint8_t c = fz_u8(f);
    if (c < 200) return 0.25 + (double)(c % 16) / 8.0;
    return fz_double(f, 1e-3, 4.0);
}

static int64_t decode_threads(fz *f) {
    uint8_t c = fz_u8(f);
    if (c < 240) return 1 + c % 4;
    return FZ_EDGE_SIZES[c % FZ_N_EDGE_SIZES] % 1000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    view v, o;
    aepo_error eb, *e;
    uint32_t flags;
    int64_t n, i, j, threads;
    double T;
    float *logits = NULL, *logp = NULL, *ent = NULL, *lpt1 = NULL, *outbuf = NULL, *gl = NULL, *gh = NULL;
    double *lse = NULL, hsum = -1, nllsum = -1;
    int64_t count = -1;
    int32_t *targets = NULL;
    uint8_t *mask = NULL;
    int32_t rc;
    int need_targets, must_fail = 0, struct_case = -1;
    kinputs kin;
    const aepo_logits_inputs *inp = &kin.in;

    decode_view(&f, &v);
    flags = fz_u32(&f);
    n = fz_elems(v.B, v.L);
    if (v.extent >= 0 && !(flags & 1)) {
        logits = (float *)fz_alloc(v.extent, sizeof(float), 0);
        for (i = 0; i < v.extent; i++) logits[i] = (flags & 2) ? fz_float(&f, -8.0f, 8.0f) : fz_finite(&f, -8.0f, 8.0f);
        if ((flags & 4) && v.extent > 0) logits[fz_below(&f, 255) % v.extent] = -INFINITY;
    }
    if (n >= 0) {
        if (!(flags & 8)) targets = fz_targets(&f, n, v.V);
        if (!(flags & 16)) mask = fz_mask(&f, n, flags & 32);
        if (flags & 64) logp = (float *)fz_alloc(n, sizeof(float), 0);
        if (flags & 128) ent = (float *)fz_alloc(n, sizeof(float), 0);
        if (!(flags & 256)) lse = (double *)fz_alloc(n, sizeof(double), 0);
        if (flags & 512) lpt1 = (float *)fz_alloc(n, sizeof(float), 0);
    }
    T = decode_temperature(&f);
    threads = decode_threads(&f);
    if (getenv("AEPO_FUZZ_TRACE")) fprintf(stderr, "B=%lld L=%lld V=%lld sb=%lld sl=%lld T=%g threads=%lld flags=%x\n", (long long)v.B, (long long)v.L, (long long)v.V, (long long)v.sb, (long long)v.sl, T, (long long)threads, flags);

    /* ---- stats ---- */
    fill_inputs(&kin, &v, logits, targets, mask, T, threads);
    /* Now and then a struct_size other than this header's, or no struct at all. */
    if ((flags & 0x3000000) == 0x3000000) {
        uint8_t c = fz_u8(&f);
        if (c >= 224) struct_case = c % 4;
    }
    switch (struct_case) {
    case 0: kin.in.struct_size = (size_t)fz_below(&f, (int64_t)sizeof kin.in); break; /* below version 1 */
    case 1: kin.in.struct_size = sizeof kin.raw; break;                                /* newer, extra bytes 0 */
    case 2: kin.in.struct_size = sizeof kin.raw; kin.raw[sizeof kin.in + fz_below(&f, 8)] = 1; break;
    case 3: inp = NULL; break;
    default: break;
    }
    e = fz_err(&f, &eb);
    rc = aepo_logits_stats(inp, logp, ent, lse, lpt1, (flags & 1024) ? NULL : &hsum, (flags & 2048) ? NULL : &nllsum,
                           (flags & 4096) ? NULL : &count, e);
    fz_check("aepo_logits_stats", rc, e);
    if (struct_case == 0 || struct_case == 2) {
        FZ_ASSERT(rc == AEPO_ERR_INVALID_ARGUMENT, "stats accepted struct_size %zu", kin.in.struct_size);
        if (e) FZ_ASSERT(strcmp(e->argument, "struct_size") == 0, "a bad struct_size named %s", e->argument);
    }
    if (struct_case == 3) {
        FZ_ASSERT(rc == AEPO_ERR_NULL_POINTER, "stats accepted in = NULL");
        if (e) FZ_ASSERT(strcmp(e->argument, "in") == 0, "in = NULL named %s", e->argument);
    }

    need_targets = logp || lpt1 || !(flags & 2048);
    if (!(T > 0) || !isfinite(T)) must_fail = 1;
    if (n > 0 && v.extent >= 0 && logits && !rows_overlap(&v) && v.V > 0) {
        for (i = 0; i < n; i++) {
            int any_finite = 0;
            const float *x = logits + row_offset(&v, i);
            if (mask && mask[i] > 1) { must_fail = 1; continue; }
            if (mask && mask[i] == 0) continue;
            for (j = 0; j < v.V; j++) {
                if (isnan(x[j]) || x[j] == INFINITY) must_fail = 1;
                if (isfinite(x[j])) any_finite = 1;
            }
            if (!any_finite) must_fail = 1;
            if (need_targets && targets && (targets[i] < 0 || targets[i] >= v.V)) must_fail = 1;
        }
    }
    if (must_fail) FZ_ASSERT(rc != AEPO_OK, "logits_stats succeeded on input it must reject");
    if (rc != AEPO_OK && e && e->index != -1)
        FZ_ASSERT(e->index >= 0 && n >= 0 && e->index < n, "stats error names row %lld of %lld", (long long)e->index,
                  (long long)n);

    if (rc == AEPO_OK) {
        int64_t valid = 0;
        int banned = 0; /* some target sits on a -inf logit: its log p is -inf */
        for (i = 0; i < n; i++) {
            int on = !mask || mask[i] == 1;
            int ban = on && need_targets && targets && logits[row_offset(&v, i) + targets[i]] == -INFINITY;
            valid += on;
            banned |= ban;
            if (logp && ban) FZ_ASSERT(logp[i] == -INFINITY, "logp[%lld] = %g on a -inf target", (long long)i, logp[i]);
            if (lpt1 && ban) FZ_ASSERT(lpt1[i] == -INFINITY, "logp_t1[%lld] = %g on a -inf target", (long long)i, lpt1[i]);
            if (logp && !ban) FZ_ASSERT(isfinite(logp[i]) && logp[i] <= 1e-4f * (1 + fabsf(logp[i])) && (on || logp[i] == 0),
                                "logp[%lld] = %g", (long long)i, logp[i]);
            if (ent) FZ_ASSERT(isfinite(ent[i]) && ent[i] >= -1e-4f && (on || ent[i] == 0), "entropy[%lld] = %g",
                               (long long)i, ent[i]);
            if (lse) FZ_ASSERT(isfinite(lse[i]) && (on || lse[i] == 0), "lse[%lld] = %g", (long long)i, lse[i]);
            if (lpt1 && !ban) FZ_ASSERT(isfinite(lpt1[i]) && (on || lpt1[i] == 0), "logp_t1[%lld] = %g", (long long)i, lpt1[i]);
        }
        if (!(flags & 4096)) FZ_ASSERT(count == (n > 0 ? valid : 0), "count %lld, %lld valid rows", (long long)count,
                                       (long long)valid);
        if (!(flags & 1024)) FZ_ASSERT(isfinite(hsum), "entropy_sum %g", hsum);
        if (!(flags & 2048)) FZ_ASSERT(banned ? nllsum == INFINITY : isfinite(nllsum), "nll_sum %g", nllsum);

        /* The same call with another thread count gives the same bits, and so does the
         * contiguous stride written out in place of a negative one. */
        if (n > 0 && logp && lse && ((flags & 0x10000) || v.sb < 0 || v.sl < 0)) {
            float *logp2 = (float *)fz_alloc(n, sizeof(float), 0);
            double *lse2 = (double *)fz_alloc(n, sizeof(double), 0);
            double hsum2 = 0, nll2 = 0;
            kinputs k2;
            int32_t rc2;
            fill_inputs(&k2, &v, logits, targets, mask, T, threads);
            if (flags & 0x10000) k2.in.threads = threads == 1 ? 3 : 1;
            k2.in.stride_b = v.eb;
            k2.in.stride_l = v.el;
            rc2 = aepo_logits_stats(&k2.in, logp2, NULL, lse2, NULL, &hsum2, &nll2, NULL, NULL);
            FZ_ASSERT(rc2 == AEPO_OK, "stats failed with another thread count or the strides written out");
            FZ_ASSERT(memcmp(logp, logp2, (size_t)n * sizeof(float)) == 0 &&
                      memcmp(lse, lse2, (size_t)n * sizeof(double)) == 0,
                      "stats depends on the thread count or on how the strides are written");
            if (!(flags & 1024)) FZ_ASSERT(memcmp(&hsum, &hsum2, sizeof hsum) == 0,
                                           "entropy_sum depends on the thread count or the strides");
            free(logp2);
            free(lse2);
        }
    }

    /* ---- backward ---- */
    if (!(flags & 0x20000) || n < 0) goto done;
    if (rc != AEPO_OK && lse) /* no stats result: decoded lse values */
        for (i = 0; i < n; i++) lse[i] = fz_double(&f, -2.0, 12.0);
    if (rc != AEPO_OK && ent)
        for (i = 0; i < n; i++) ent[i] = fz_float(&f, 0.0f, 3.0f);
    if (!(flags & 0x40000)) gl = fz_floats(&f, n, -2.0f, 2.0f, 0);
    if (flags & 0x80000) gh = fz_floats(&f, n, -2.0f, 2.0f, 0);
    if (flags & 0x100000) for (i = 0; gl && i < n; i++) if (fz_u8(&f) < 64) gl[i] = 0;

    o = v;
    switch ((flags >> 21) & 3) {
    case 0: /* a separate view, its own strides */
        if (fz_bit(&f)) { o.sl = fz_add(o.V, fz_below(&f, 3)); o.sb = fz_mul(o.L, o.sl); }
        settle(&o);
        outbuf = (o.extent >= 0 && !(flags & 0x800000)) ? (float *)fz_alloc(o.extent, sizeof(float), 0) : NULL;
        break;
    case 1: /* in place */
        outbuf = logits;
        break;
    default: /* overlapping the logits, shifted by one element */
        settle(&o);
        outbuf = NULL;
        if (logits && v.extent > 1 && o.extent >= 0) {
            float *big = (float *)fz_alloc(v.extent + 1, sizeof(float), 0);
            memcpy(big, logits, (size_t)v.extent * sizeof(float));
            free(logits);
            logits = big;
            outbuf = logits + 1;
        }
        break;
    }
    fill_inputs(&kin, &v, logits, targets, mask, T, threads);
    e = fz_err(&f, &eb);
    rc = aepo_logits_backward(&kin.in, lse, ent, gl, gh, outbuf, o.sb, o.sl, e);
    fz_check("aepo_logits_backward", rc, e);
    if (((flags >> 21) & 3) >= 2 && outbuf && n > 0 && !rows_overlap(&v) && v.V > 0)
        FZ_ASSERT(rc != AEPO_OK, "backward accepted out overlapping logits by one element");
    if (rc == AEPO_OK && outbuf && n > 0) {
        for (i = 0; i < n; i++) {
            const float *row = outbuf + row_offset(&o, i);
            int zero = (mask && mask[i] == 0) || ((!gl || gl[i] == 0) && (!gh || gh[i] == 0));
            if (!zero) {
                FZ_ASSERT(!gl || isfinite(gl[i]), "backward succeeded with grad_logp[%lld] = %g", (long long)i, gl[i]);
                FZ_ASSERT(!gh || isfinite(gh[i]), "backward succeeded with grad_entropy[%lld] = %g", (long long)i, gh[i]);
            }
            for (j = 0; j < v.V; j++) {
                FZ_ASSERT(isfinite(row[j]), "out row %lld column %lld is %g", (long long)i, (long long)j, row[j]);
                if (zero) FZ_ASSERT(row[j] == 0, "out row %lld is not zero", (long long)i);
            }
        }
    }

done:
    free(logits);
    if (((flags >> 21) & 3) == 0) free(outbuf);
    free(logp); free(ent); free(lpt1); free(lse); free(gl); free(gh); free(targets); free(mask);
    return 0;
}
