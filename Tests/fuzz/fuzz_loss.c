/* Fuzzes the policy-loss handle: aepo_loss_compute, aepo_loss_advantages,
 * aepo_loss_select_regularizer and aepo_loss_inputs_init, with a config, shapes, values and
 * flags decoded from the input.
 *
 * Invariants beyond fz_check:
 *   - compute: on success the loss, metrics and gradients are finite, the gradients are 0
 *     where mask = 0, metrics beyond min(cap, AEPO_LOSS_METRIC_COUNT) are not written, the
 *     main-row and regulariser-row token counts add up to n_tokens; a mask or
 *     reg_rows value other than 0/1 fails; NaN/Inf under mask = 1 in any given array fails
 *     (with the documented exceptions: advantages of regulariser rows and of rows without a
 *     valid token are not read); AEPO_ERR_NON_FINITE names a float array and an index inside
 *     it, or "value" or "metrics" without an index when a result overflows; a failure never
 *     writes loss or metrics, and only AEPO_ERR_NON_FINITE may have written the gradients;
 *     a NULL handle fails naming "loss";
 *   - advantages: success means finite outputs and finite rewards;
 *   - select_regularizer: k <= min(k_max, n_positive) <= n, indices ascending in [0, n);
 *   - inputs_init: a struct_size below the first version fails and writes nothing. */
#include "fuzz.h"

static const char *const MODES[] = {"vanilla", "gspo", "cispo", "gpg", "reinforce", "clip_cov", "kl_cov"};
static const char *const AGGS[] = {"token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean",
                                   "seq-mean-token-sum-norm"};
static const char *const KLS[] = {"kl", "abs", "mse", "low_var_kl", "k3+", "k1", "k2"};
static const char *const ESTIMATORS[] = {"grpo", "rloo", "reinforce_plus_plus_baseline", "grpo_passk"};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define FZ_METRIC_SLOTS (AEPO_LOSS_METRIC_COUNT + 4) /* the metrics buffer, with slots past the count */

static char json[768]; /* the config of the current input (printed by AEPO_FUZZ_TRACE) */

static aepo_loss *make_handle(fz *f) {
    aepo_loss *h = NULL;
    aepo_error e;
    int32_t rc;
    const char *mode = MODES[fz_below(f, COUNT(MODES))];
    const char *agg = AGGS[fz_below(f, COUNT(AGGS))];
    const char *kl = KLS[fz_below(f, COUNT(KLS))];
    const char *est = ESTIMATORS[fz_below(f, COUNT(ESTIMATORS))];
    uint8_t c = fz_u8(f);
    snprintf(json, sizeof json,
             "{\"loss\": {\"policy_loss\": \"%s\", \"loss_agg_mode\": \"%s\", \"loss_scale_factor\": %s, "
             "\"kl_loss_type\": \"%s\", \"kl_loss_coef\": %s, \"entropy_coeff\": %s, \"clip_ratio_low\": %s, "
             "\"clip_ratio_high\": %s, \"threads\": %d}, "
             "\"advantage\": {\"estimator\": \"%s\", \"norm_adv_by_std_in_grpo\": %s}, "
             "\"regularizer\": {\"combine\": \"%s\", \"alpha\": %s, \"threshold\": %s}}",
             mode, agg, (c & 1) ? "0" : "64", kl, (c & 2) ? "0" : "0.1", (c & 4) ? "0" : ((c & 8) ? "0.01" : "-2.5"),
             (c & 16) ? "0.2" : "0", (c & 32) ? "0.28" : "1e6", (int)(1 + fz_below(f, 3)), est,
             (c & 64) ? "true" : "false", (c & 128) ? "weighted" : "replace", fz_bit(f) ? "0.09375" : "0",
             fz_bit(f) ? "0.05" : "-1");
    rc = aepo_loss_create(json, strlen(json), &h, &e);
    fz_check("aepo_loss_create", rc, &e);
    if (rc == AEPO_OK) return h;
    FZ_ASSERT(rc == AEPO_ERR_CONFIG && h == NULL, "create failed with %s", aepo_status_name(rc));
    /* A mode or estimator this version does not implement, or the norm mode without a scale
     * factor: fall back to a config that every version takes. */
    rc = aepo_loss_create("{\"loss\": {\"kl_loss_coef\": 0.1}}", 31, &h, &e);
    FZ_ASSERT(rc == AEPO_OK, "the fallback config failed: %s", e.message);
    return h;
}

static int is_array_name(const char *s) {
    static const char *const names[] = {"logp", "old_logp", "advantages", "ref_logp", "is_weights", "entropy",
                                        "grad", "grad_entropy", "value", "metrics"};
    int i;
    for (i = 0; i < COUNT(names); i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

static int64_t edge_count(fz *f) {
    uint8_t c = fz_u8(f);
    if (c < 160) return -1;
    if (c < 240) return c % 40;
    return FZ_EDGE_SIZES[c % FZ_N_EDGE_SIZES];
}

static void fuzz_compute(fz *f, aepo_loss *h) {
    aepo_loss_inputs in;
    aepo_error eb, *e;
    unsigned char *raw;
    int64_t B = fz_size(f, 6), L = fz_size(f, 9);
    int64_t n = fz_elems(B, L), nb = fz_elems(B, 1);
    uint32_t flags = fz_u32(f);
    int per_token = (flags & 1) != 0;
    int64_t nadv = per_token ? n : nb;
    float *logp = NULL, *old = NULL, *adv = NULL, *ref = NULL, *isw = NULL, *ent = NULL;
    uint8_t *mask = NULL, *reg = NULL;
    float *grad = NULL, *grad_ent = NULL;
    double loss = 12345.0, metrics[FZ_METRIC_SLOTS];
    size_t cap = (size_t)fz_below(f, FZ_METRIC_SLOTS), k;
    int32_t rc;
    int64_t i, b;
    int want_fail = 0, bad_value = 0;
    const uint32_t sentinel_bits = 0x7fc0deadu;
    float sentinel;
    memcpy(&sentinel, &sentinel_bits, sizeof sentinel);

    if (n >= 0) {
        if (!(flags & 2)) logp = fz_floats(f, n, -12.0f, 0.0f, flags & 0x100);
        if (!(flags & 4)) old = fz_floats(f, n, -12.0f, 0.0f, flags & 0x100);
        if (!(flags & 8)) mask = fz_mask(f, n, flags & 0x200);
        if (flags & 0x10) ref = fz_floats(f, n, -12.0f, 0.0f, 0);
        if (flags & 0x20) isw = fz_floats(f, n, 0.0f, 3.0f, 0);
        if (flags & 0x40) ent = fz_floats(f, n, 0.0f, 5.0f, 0);
        if (flags & 0x1000) grad = (float *)fz_alloc(n, sizeof(float), 0);
        if (flags & 0x2000) grad_ent = (float *)fz_alloc(n, sizeof(float), 0);
    }
    if (nadv >= 0 && !(flags & 0x80)) adv = fz_floats(f, nadv, -3.0f, 3.0f, 0);
    if (nb >= 0 && (flags & 0x400)) reg = fz_mask(f, nb, flags & 0x800);
    for (i = 0; grad && i < n; i++) grad[i] = sentinel;
    for (i = 0; grad_ent && i < n; i++) grad_ent[i] = sentinel;
    for (k = 0; k < FZ_METRIC_SLOTS; k++) metrics[k] = -777.0;

    rc = aepo_loss_inputs_init(&in, sizeof in, NULL);
    FZ_ASSERT(rc == AEPO_OK, "aepo_loss_inputs_init failed");
    in.B = B;
    in.L = L;
    in.logp = logp;
    in.old_logp = old;
    in.advantages = adv;
    in.mask = mask;
    in.ref_logp = ref;
    in.is_weights = isw;
    in.entropy = ent;
    in.reg_rows = reg;
    in.adv_per_token = per_token;
    if (flags & 0x4000) {
        /* An invalid flag (the buffer stays sized for per_token). */
        in.adv_per_token = (int32_t)fz_u32(f);
        if (in.adv_per_token == 0 || in.adv_per_token == 1) in.adv_per_token = per_token;
    }
    if (flags & 0x8000) in.reserved = (int32_t)fz_u8(f);
    if (flags & 0x10000) in.reg_alpha = fz_double(f, 0.0, 2.0);
    in.global_tokens = edge_count(f);
    in.global_seqs = edge_count(f);
    in.global_reg_tokens = edge_count(f);
    if (flags & 0x20000) in.dp_size = fz_size(f, 3);
    in.step = (int64_t)fz_u64(f);

    /* The struct through a buffer with room for a newer, larger struct. */
    raw = (unsigned char *)calloc(1, sizeof in + 16);
    if (!raw) abort();
    switch ((flags >> 18) & 7) {
    case 1: in.struct_size = sizeof in - 8; break;
    case 2: in.struct_size = (size_t)fz_below(f, 17); break;
    case 3: in.struct_size = sizeof in + 16; break;
    case 4: in.struct_size = sizeof in + 16; raw[sizeof in + fz_below(f, 16)] = (unsigned char)(1 + fz_below(f, 255)); break;
    case 5: in.struct_size = (size_t)-1 - fz_below(f, 8); break; /* wraps negative as a signed size */
    default: break;
    }
    if (in.struct_size > sizeof in + 16 && in.struct_size < ((size_t)1 << 62)) in.struct_size = sizeof in;
    memcpy(raw, &in, sizeof in);

    e = fz_err(f, &eb);
    rc = aepo_loss_compute(h, (flags & 0x40000000) ? NULL : (const aepo_loss_inputs *)(void *)raw,
                           (flags & 0x80000000) ? NULL : &loss, grad, grad_ent, (flags & 0x400000) ? NULL : metrics,
                           (flags & 0x400000) ? 0 : cap, e);
    fz_check("aepo_loss_compute", rc, e);

    /* What the contract says must fail. */
    for (i = 0; mask && i < n; i++) if (mask[i] > 1) bad_value = 1;
    for (b = 0; reg && b < nb; b++) if (reg[b] > 1) bad_value = 1;
    if (mask && !bad_value) {
        for (i = 0; i < n; i++) {
            int64_t row = L > 0 ? i / L : 0;
            int is_reg = reg && reg[row] == 1;
            if (mask[i] != 1) continue;
            if ((logp && !isfinite(logp[i])) || (old && !isfinite(old[i])) || (ref && !isfinite(ref[i])) ||
                (isw && !isfinite(isw[i])) || (ent && !isfinite(ent[i])))
                want_fail = 1;
            if (adv && !is_reg && !isfinite(adv[per_token ? i : row])) want_fail = 1;
        }
    }
    if (in.adv_per_token != 0 && in.adv_per_token != 1) bad_value = 1;
    if (getenv("AEPO_FUZZ_TRACE")) {
        fprintf(stderr, "%s\nB=%lld L=%lld flags=%x per_token=%d rc=%s %s\n", json, (long long)B, (long long)L,
                flags, per_token, aepo_status_name(rc), e ? e->message : "");
        for (i = 0; i < n; i++)
            fprintf(stderr, "  [%lld] m=%d lp=%g old=%g adv=%g ref=%g isw=%g ent=%g reg=%d\n", (long long)i,
                    mask ? mask[i] : -1, logp ? logp[i] : 0, old ? old[i] : 0,
                    adv ? adv[per_token ? i : (L ? i / L : 0)] : 0, ref ? ref[i] : 0, isw ? isw[i] : 0,
                    ent ? ent[i] : 0, reg ? reg[L ? i / L : 0] : -1);
    }
    if (bad_value || want_fail) {
        FZ_ASSERT(rc != AEPO_OK, "compute succeeded with %s", bad_value ? "a mask/reg_rows value other than 0/1"
                                                                        : "NaN or Inf under mask = 1");
    }

    if (rc == AEPO_OK) {
        if (!(flags & 0x80000000)) FZ_ASSERT(isfinite(loss), "loss is %g", loss);
        if (!(flags & 0x400000)) {
            for (k = 0; k < cap && k < AEPO_LOSS_METRIC_COUNT; k++)
                FZ_ASSERT(isfinite(metrics[k]), "metric %zu is %g", k, metrics[k]);
            for (k = cap < AEPO_LOSS_METRIC_COUNT ? cap : AEPO_LOSS_METRIC_COUNT; k < FZ_METRIC_SLOTS; k++)
                FZ_ASSERT(metrics[k] == -777.0, "metric slot %zu beyond the cap or the count was written", k);
            if (cap >= AEPO_LOSS_METRIC_COUNT)
                FZ_ASSERT(metrics[AEPO_LOSS_METRIC_N_TOKENS_MAIN] + metrics[AEPO_LOSS_METRIC_N_TOKENS_REG] ==
                              metrics[AEPO_LOSS_METRIC_N_TOKENS],
                          "n_tokens_main %g + n_tokens_reg %g != n_tokens %g", metrics[AEPO_LOSS_METRIC_N_TOKENS_MAIN],
                          metrics[AEPO_LOSS_METRIC_N_TOKENS_REG], metrics[AEPO_LOSS_METRIC_N_TOKENS]);
        }
        for (i = 0; i < n; i++) {
            if (grad) {
                FZ_ASSERT(isfinite(grad[i]), "grad[%lld] is %g", (long long)i, grad[i]);
                if (mask[i] == 0) FZ_ASSERT(grad[i] == 0.0f, "grad[%lld] = %g under mask = 0", (long long)i, grad[i]);
            }
            if (grad_ent) {
                FZ_ASSERT(isfinite(grad_ent[i]), "grad_entropy[%lld] is %g", (long long)i, grad_ent[i]);
                if (mask[i] == 0) FZ_ASSERT(grad_ent[i] == 0.0f, "grad_entropy[%lld] under mask = 0", (long long)i);
            }
        }
    } else {
        FZ_ASSERT(loss == 12345.0, "a failed compute wrote the loss");
        for (k = 0; k < FZ_METRIC_SLOTS; k++) FZ_ASSERT(metrics[k] == -777.0, "a failed compute wrote metric %zu", k);
        if (rc != AEPO_ERR_NON_FINITE) {
            for (i = 0; i < n; i++) {
                FZ_ASSERT(!grad || memcmp(&grad[i], &sentinel, sizeof sentinel) == 0,
                          "compute failed with %s after writing grad", aepo_status_name(rc));
                FZ_ASSERT(!grad_ent || memcmp(&grad_ent[i], &sentinel, sizeof sentinel) == 0,
                          "compute failed with %s after writing grad_entropy", aepo_status_name(rc));
            }
        }
        if (rc == AEPO_ERR_NON_FINITE && e) {
            int64_t limit = strcmp(e->argument, "advantages") == 0 ? nadv : n;
            FZ_ASSERT(is_array_name(e->argument), "non-finite error names %s", e->argument);
            if (strcmp(e->argument, "value") == 0 || strcmp(e->argument, "metrics") == 0) /* a result overflows */
                FZ_ASSERT(e->index == -1, "the %s overflow names index %lld", e->argument, (long long)e->index);
            else
                FZ_ASSERT(e->index >= 0 && e->index < limit, "non-finite index %lld outside [0, %lld)",
                          (long long)e->index, (long long)limit);
        }
    }
    free(raw);
    free(logp); free(old); free(adv); free(mask); free(ref); free(isw); free(ent); free(reg);
    free(grad); free(grad_ent);
}

static int64_t *group_ids(fz *f, int64_t n) {
    int64_t *g = (int64_t *)fz_alloc(n, sizeof(int64_t), 0);
    int64_t i;
    if (!g) return NULL;
    for (i = 0; i < n; i++) {
        uint8_t c = fz_u8(f);
        g[i] = c < 240 ? (int64_t)(c % 5) : FZ_EDGE_SIZES[c % FZ_N_EDGE_SIZES];
    }
    return g;
}

static void fuzz_advantages(fz *f, aepo_loss *h) {
    aepo_error eb, *e;
    int64_t n = fz_size(f, 12), i;
    int64_t m = fz_elems(n, 1);
    uint8_t flags = fz_u8(f);
    float *rewards = (flags & 1) ? NULL : fz_floats(f, m, -2.0f, 2.0f, flags & 8);
    int64_t *ids = (flags & 2) ? NULL : group_ids(f, m);
    int64_t *lengths = NULL;
    float *out = (flags & 4) ? NULL : (float *)fz_alloc(m, sizeof(float), 0);
    int32_t rc;
    int finite = 1;
    if ((flags & 16) && m >= 0) {
        lengths = (int64_t *)fz_alloc(m, sizeof(int64_t), 0);
        for (i = 0; i < m; i++) lengths[i] = (int64_t)fz_u8(f) - 8;
    }
    e = fz_err(f, &eb);
    rc = aepo_loss_advantages(h, rewards, ids, n, lengths, out, e);
    fz_check("aepo_loss_advantages", rc, e);
    for (i = 0; rewards && i < m; i++) if (!isfinite(rewards[i])) finite = 0;
    if (rc == AEPO_OK) {
        FZ_ASSERT(finite, "advantages succeeded with a non-finite reward");
        for (i = 0; out && i < m; i++) FZ_ASSERT(isfinite(out[i]), "advantage %lld is %g", (long long)i, out[i]);
    } else if (rc == AEPO_ERR_NON_FINITE && e) {
        FZ_ASSERT(e->index >= 0 && e->index < m, "non-finite index %lld", (long long)e->index);
    }
    free(rewards); free(ids); free(lengths); free(out);
}

static void fuzz_select(fz *f, aepo_loss *h) {
    aepo_error eb, *e;
    int64_t n = fz_size(f, 12), i;
    int64_t m = fz_elems(n, 1);
    uint8_t flags = fz_u8(f);
    float *rewards = (flags & 1) ? NULL : fz_floats(f, m, -1.0f, 1.0f, flags & 8);
    int64_t *ids = (flags & 2) ? NULL : group_ids(f, m);
    int64_t kmax = fz_size(f, 10);
    int32_t halve = fz_u8(f) < 240 ? fz_bit(f) : (int32_t)fz_u32(f);
    int64_t cap = (flags & 4) ? 0 : fz_size(f, 12);
    int64_t ncap = fz_elems(cap, 1);
    int64_t *indices = (flags & 4) ? NULL : (int64_t *)fz_alloc(ncap, sizeof(int64_t), 0);
    int64_t k = -5, npos = -5;
    int32_t rc;
    if (!indices) cap = (flags & 32) ? (int64_t)fz_below(f, 4) : 0;
    e = fz_err(f, &eb);
    rc = aepo_loss_select_regularizer(h, rewards, ids, n, kmax, halve, indices, (size_t)cap,
                                      (flags & 16) ? NULL : &k, (flags & 64) ? NULL : &npos, e);
    fz_check("aepo_loss_select_regularizer", rc, e);
    if (rc == AEPO_OK) {
        if (!(flags & 16) && !(flags & 64)) {
            FZ_ASSERT(npos >= 0 && npos <= n, "n_positive %lld of %lld rows", (long long)npos, (long long)n);
            FZ_ASSERT(k >= 0 && k <= kmax && k <= npos, "k = %lld, k_max %lld, n_positive %lld", (long long)k,
                      (long long)kmax, (long long)npos);
            for (i = 0; indices && i < k; i++) {
                FZ_ASSERT(indices[i] >= 0 && indices[i] < n, "index %lld out of range", (long long)indices[i]);
                FZ_ASSERT(i == 0 || indices[i] > indices[i - 1], "indices not ascending");
            }
        }
    } else if (rc == AEPO_ERR_BUFFER_TOO_SMALL) {
        FZ_ASSERT((flags & 16) || k > cap, "too small a buffer reported for k = %lld, cap %lld", (long long)k,
                  (long long)cap);
    }
    free(rewards); free(ids); free(indices);
}

static void fuzz_inputs_init(fz *f) {
    unsigned char buf[sizeof(aepo_loss_inputs) + 32];
    aepo_error eb, *e;
    size_t size;
    int32_t rc;
    size_t i;
    switch (fz_below(f, 4)) {
    case 0: size = sizeof(aepo_loss_inputs); break;
    case 1: size = (size_t)fz_below(f, (int64_t)sizeof(aepo_loss_inputs)); break;
    case 2: size = sizeof(aepo_loss_inputs) + (size_t)fz_below(f, 33); break;
    default: size = (size_t)-1 - (size_t)fz_below(f, 4); break;
    }
    memset(buf, 0xee, sizeof buf);
    e = fz_err(f, &eb);
    rc = aepo_loss_inputs_init(fz_u8(f) < 8 ? NULL : (aepo_loss_inputs *)(void *)buf, size, e);
    fz_check("aepo_loss_inputs_init", rc, e);
    if (size < sizeof(aepo_loss_inputs) || size > sizeof buf) {
        FZ_ASSERT(rc != AEPO_OK, "inputs_init accepted struct_size %zu", size);
        for (i = 0; i < sizeof buf; i++) FZ_ASSERT(buf[i] == 0xee, "a failed inputs_init wrote byte %zu", i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    uint8_t op = fz_u8(&f);
    aepo_loss *h;
    if (op % 8 == 7) {
        fuzz_inputs_init(&f);
        return 0;
    }
    h = make_handle(&f);
    if (fz_u8(&f) >= 252) {
        aepo_error e;
        /* NULL handle. */
        fz_check("aepo_loss_compute", aepo_loss_compute(NULL, NULL, NULL, NULL, NULL, NULL, 0, &e), &e);
        FZ_ASSERT(e.status == AEPO_ERR_NULL_POINTER && strcmp(e.argument, "loss") == 0, "a NULL handle gave %s (%s)",
                  aepo_status_name(e.status), e.argument);
        aepo_loss_free(h);
        return 0;
    }
    switch (op % 8) {
    case 0: case 1: case 2: case 3: fuzz_compute(&f, h); break;
    case 4: case 5: fuzz_advantages(&f, h); break;
    default: fuzz_select(&f, h); break;
    }
    aepo_loss_free(h);
    return 0;
}
