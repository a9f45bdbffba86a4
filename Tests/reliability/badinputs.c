/* Bad inputs, per entry point, with the status and argument each must return.
 *
 *   badinputs [--log FILE]
 *
 * Every case starts from valid inputs, breaks one thing (a NULL pointer, a negative or
 * overflowing size, a value out of its domain, NaN/Inf under mask = 1 or in an unmasked
 * array, values whose result overflows), calls the entry point and checks the status,
 * err->argument and, where it is the point of the case, err->index. The valid baseline and
 * the documented non-errors (NaN under mask = 0, -Inf logits, denormals) are cases too.
 *
 * With --log, every case is written as one JSON line; scripts/reliability_table.py turns
 * the log into the table of docs/RELIABILITY.md, and `make test` checks that the committed
 * table is the one this program produces. */
#include <aepo.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *logf_ = NULL;
static int n_cases = 0, n_failed = 0;

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", (unsigned)(unsigned char)*s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

#define ANY_INDEX (-2)

/* A string literal and its length in bytes (NUL bytes inside included). */
#define JSON(s) (s), (sizeof(s) - 1)

/* Checks one case and logs it. `kind` groups the cases in the table: valid, null, shape,
 * value, non-finite, overflow. */
static void expect(const char *entry, const char *kind, const char *input, int32_t rc, const aepo_error *e,
                   int32_t want, const char *want_arg, int64_t want_index) {
    int ok = rc == want && e->status == rc;
    n_cases++;
    if (ok && want != AEPO_OK && want_arg && strcmp(e->argument, want_arg) != 0) ok = 0;
    if (ok && want_index != ANY_INDEX && e->index != want_index) ok = 0;
    if (ok && want == AEPO_OK && (e->argument[0] || e->message[0])) ok = 0;
    if (!ok) {
        n_failed++;
        fprintf(stderr, "badinputs: %s, %s: got %s (argument \"%s\", index %lld: %s), expected %s (argument \"%s\", "
                        "index %lld)\n", entry, input, aepo_status_name(rc), e->argument, (long long)e->index,
                e->message, aepo_status_name(want), want_arg ? want_arg : "", (long long)want_index);
    }
    if (logf_) {
        fprintf(logf_, "{\"entry\": ");
        json_string(logf_, entry);
        fprintf(logf_, ", \"kind\": ");
        json_string(logf_, kind);
        fprintf(logf_, ", \"input\": ");
        json_string(logf_, input);
        fprintf(logf_, ", \"status\": ");
        json_string(logf_, aepo_status_name(rc));
        fprintf(logf_, ", \"argument\": ");
        json_string(logf_, e->argument);
        fprintf(logf_, ", \"index\": %lld}\n", (long long)e->index);
    }
}

/* A case: the description, its kind and what it must return. */
typedef struct want {
    const char *input, *kind, *arg;
    int32_t status;
    int64_t index;
} want;

static want W(const char *kind, const char *input, int32_t status, const char *arg, int64_t index) {
    want w;
    w.kind = kind;
    w.input = input;
    w.status = status;
    w.arg = arg;
    w.index = index;
    return w;
}

#define OK_CASE(input) W("valid", input, AEPO_OK, "", -1)

/* ------------------------------------------------------------------- config --- */

static void config_cases(void) {
    aepo_error e;
    char buf[8], big[8192];
    size_t n = 0;
    const char *bad = "{\"loss\": {\"clip_ratio_low\": 2}}";
    int32_t rc;
    rc = aepo_config_validate(NULL, 99, &e);
    expect("aepo_config_validate", "valid", "json NULL (all defaults)", rc, &e, AEPO_OK, "", -1);
    rc = aepo_config_validate("{}", (size_t)-1, &e);
    expect("aepo_config_validate", "shape", "len = SIZE_MAX (negative as a signed size)", rc, &e, AEPO_ERR_SHAPE,
           "len", -1);
    rc = aepo_config_validate(bad, strlen(bad), &e);
    expect("aepo_config_validate", "value", "a key out of range (every config error kind: docs/CONFIG.md)", rc, &e,
           AEPO_ERR_CONFIG, "loss.clip_ratio_low", -1);
    rc = aepo_config_validate(JSON("{\"a\0b\": 1}"), &e);
    expect("aepo_config_validate", "value", "a NUL byte inside a key", rc, &e, AEPO_ERR_CONFIG, "a\\u0000b", -1);
    rc = aepo_config_validate(JSON("{\"loss.threads\": 2}"), &e);
    expect("aepo_config_validate", "value", "a dotted key (\"loss.threads\" at the top level)", rc, &e,
           AEPO_ERR_CONFIG, "loss.threads", -1);
    rc = aepo_config_normalize(JSON("{}"), NULL, 5, &n, &e);
    expect("aepo_config_normalize", "null", "buf NULL with cap > 0", rc, &e, AEPO_ERR_NULL_POINTER, "buf", -1);
    rc = aepo_config_normalize(JSON("{}"), buf, sizeof buf, &n, &e);
    expect("aepo_config_normalize", "shape", "cap smaller than the text", rc, &e, AEPO_ERR_BUFFER_TOO_SMALL, "buf", -1);
    rc = aepo_config_normalize(JSON("{"), big, sizeof big, &n, &e);
    expect("aepo_config_normalize", "value", "truncated JSON", rc, &e, AEPO_ERR_CONFIG, "config", -1);
    rc = aepo_default_config_json(buf, sizeof buf, &n, &e);
    expect("aepo_default_config_json", "shape", "cap smaller than the text", rc, &e, AEPO_ERR_BUFFER_TOO_SMALL, "buf",
           -1);
    rc = aepo_default_config_json(NULL, 0, NULL, &e);
    expect("aepo_default_config_json", "valid", "size query with len NULL", rc, &e, AEPO_OK, "", -1);
    rc = aepo_runtime_info(NULL, 0, &n, &e);
    expect("aepo_runtime_info", "valid", "size query", rc, &e, AEPO_OK, "", -1);
    rc = aepo_runtime_info(NULL, 5, &n, &e);
    expect("aepo_runtime_info", "null", "buf NULL with cap > 0", rc, &e, AEPO_ERR_NULL_POINTER, "buf", -1);
    rc = aepo_runtime_info(buf, sizeof buf, &n, &e);
    expect("aepo_runtime_info", "shape", "cap smaller than the text", rc, &e, AEPO_ERR_BUFFER_TOO_SMALL, "buf", -1);
}

static void create_cases(void) {
    aepo_error e;
    aepo_loss *l = NULL;
    aepo_controller *c = NULL;
    aepo_sampler *s = NULL;
    aepo_fused_head *f = NULL;
    const char *arr = "[]";
    int32_t rc;
    rc = aepo_loss_create(NULL, 0, NULL, &e);
    expect("aepo_loss_create", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_loss_create(arr, 2, &l, &e);
    expect("aepo_loss_create", "value", "a JSON array", rc, &e, AEPO_ERR_CONFIG, "config", -1);
    rc = aepo_loss_create(JSON("{\"loss\": {\"loss_agg_mode\": \"seq-mean-token-sum-norm\"}}"), &l, &e);
    expect("aepo_loss_create", "value", "seq-mean-token-sum-norm without loss_scale_factor", rc, &e, AEPO_ERR_CONFIG,
           "loss.loss_scale_factor", -1);
    rc = aepo_controller_create(NULL, 0, NULL, &e);
    expect("aepo_controller_create", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_controller_create(JSON("{\"controller\": {\"t_high\": 0}}"), &c, &e);
    expect("aepo_controller_create", "value", "t_high = 0", rc, &e, AEPO_ERR_CONFIG, "controller.t_high", -1);
    rc = aepo_sampler_create(NULL, 0, NULL, &e);
    expect("aepo_sampler_create", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_sampler_create(JSON("{\"sampler\": {\"temperature\": 1e-31}}"), &s, &e);
    expect("aepo_sampler_create", "value", "temperature 1e-31 (1/T overflows float)", rc, &e, AEPO_ERR_CONFIG,
           "sampler.temperature", -1);
    rc = aepo_fused_head_create(NULL, 0, NULL, &e);
    expect("aepo_fused_head_create", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_fused_head_create(JSON("{\"fused\": {\"chunk_n\": 0}}"), &f, &e);
    expect("aepo_fused_head_create", "value", "chunk_n = 0", rc, &e, AEPO_ERR_CONFIG, "fused.chunk_n", -1);
    rc = aepo_loss_config_json(NULL, NULL, 0, NULL, &e);
    expect("aepo_loss_config_json", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "loss", -1);
    rc = aepo_controller_config_json(NULL, NULL, 0, NULL, &e);
    expect("aepo_controller_config_json", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "controller", -1);
    rc = aepo_sampler_config_json(NULL, NULL, 0, NULL, &e);
    expect("aepo_sampler_config_json", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "sampler", -1);
    rc = aepo_fused_head_config_json(NULL, NULL, 0, NULL, &e);
    expect("aepo_fused_head_config_json", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "head", -1);
    /* free(NULL) is a no-op: nothing to check but that it returns. */
    aepo_loss_free(NULL);
    aepo_controller_free(NULL);
    aepo_sampler_free(NULL);
    aepo_fused_head_free(NULL);
}

/* --------------------------------------------------------------------- loss --- */

enum { B = 2, L = 4, N = B * L };

typedef struct loss_case {
    aepo_loss *h;
    aepo_loss_inputs in;
    unsigned char raw[sizeof(aepo_loss_inputs) + 8];
    float logp[N], old[N], adv[N], ref[N], isw[N], ent[N], grad[N], gent[N];
    uint8_t mask[N], reg[B];
} loss_case;

static void loss_base(loss_case *c, aepo_loss *h) {
    static const float LP[N] = {-1, -0.5f, -2, -0.1f, -0.3f, -1.2f, -0.7f, -9};
    static const uint8_t M[N] = {1, 1, 1, 0, 1, 1, 1, 1};
    int i;
    memset(c, 0, sizeof *c);
    c->h = h;
    for (i = 0; i < N; i++) {
        c->logp[i] = LP[i];
        c->old[i] = LP[i] + 0.1f;
        c->ref[i] = LP[i] - 0.2f;
        c->isw[i] = 1;
        c->ent[i] = 1.5f;
        c->mask[i] = M[i];
        c->adv[i] = i % 2 ? -1.0f : 1.0f;
    }
    aepo_loss_inputs_init(&c->in, sizeof c->in, NULL);
    c->in.B = B;
    c->in.L = L;
    c->in.logp = c->logp;
    c->in.old_logp = c->old;
    c->in.advantages = c->adv;
    c->in.mask = c->mask;
}

static void loss_compute_cases(void) {
    aepo_loss *plain = NULL, *kl = NULL, *ent = NULL, *weighted = NULL, *sumnorm = NULL, *sumnorm300 = NULL;
    aepo_loss *tokensum = NULL;
    aepo_error e;
    int k, i;
    const char *kc = "{\"loss\": {\"kl_loss_coef\": 0.1}}", *ec = "{\"loss\": {\"entropy_coeff\": 0.01}}";
    const char *wc = "{\"regularizer\": {\"combine\": \"weighted\"}}";
    const char *sc = "{\"loss\": {\"loss_agg_mode\": \"seq-mean-token-sum-norm\", \"loss_scale_factor\": 5e-324}}";
    const char *s3 = "{\"loss\": {\"loss_agg_mode\": \"seq-mean-token-sum-norm\", \"loss_scale_factor\": 1e-300}}";
    const char *tc = "{\"loss\": {\"loss_agg_mode\": \"token-sum\", \"clip_ratio_high\": 10}}";
    aepo_loss_create(NULL, 0, &plain, NULL);
    aepo_loss_create(kc, strlen(kc), &kl, NULL);
    aepo_loss_create(ec, strlen(ec), &ent, NULL);
    aepo_loss_create(wc, strlen(wc), &weighted, NULL);
    aepo_loss_create(sc, strlen(sc), &sumnorm, NULL);
    aepo_loss_create(s3, strlen(s3), &sumnorm300, NULL);
    aepo_loss_create(tc, strlen(tc), &tokensum, NULL);
    for (k = 0;; k++) {
        loss_case c;
        const aepo_loss_inputs *in = &c.in;
        double loss;
        want w;
        int32_t rc;
        int no_grad = 0;
        loss_base(&c, plain);
        switch (k) {
        case 0: w = OK_CASE("valid inputs"); break;
        case 1: w = W("null", "NULL handle", AEPO_ERR_NULL_POINTER, "loss", -1); c.h = NULL; break;
        case 2: w = W("null", "in NULL", AEPO_ERR_NULL_POINTER, "in", -1); in = NULL; break;
        case 3: w = W("null", "logp NULL", AEPO_ERR_NULL_POINTER, "logp", -1); c.in.logp = NULL; break;
        case 4: w = W("null", "old_logp NULL", AEPO_ERR_NULL_POINTER, "old_logp", -1); c.in.old_logp = NULL; break;
        case 5: w = W("null", "advantages NULL", AEPO_ERR_NULL_POINTER, "advantages", -1); c.in.advantages = NULL; break;
        case 6: w = W("null", "mask NULL", AEPO_ERR_NULL_POINTER, "mask", -1); c.in.mask = NULL; break;
        case 7: w = W("value", "struct_size 0", AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1); c.in.struct_size = 0; break;
        case 8:
            w = W("value", "struct_size beyond this version with a non-zero byte there", AEPO_ERR_INVALID_ARGUMENT,
                  "struct_size", -1);
            c.in.struct_size = sizeof c.in + 8;
            memcpy(c.raw, &c.in, sizeof c.in);
            c.raw[sizeof c.in + 3] = 1;
            in = (const aepo_loss_inputs *)(void *)c.raw;
            break;
        case 9:
            w = OK_CASE("struct_size beyond this version, extra bytes 0");
            c.in.struct_size = sizeof c.in + 8;
            memcpy(c.raw, &c.in, sizeof c.in);
            in = (const aepo_loss_inputs *)(void *)c.raw;
            break;
        case 10: w = W("shape", "B = -1", AEPO_ERR_SHAPE, "B", -1); c.in.B = -1; break;
        case 11: w = W("shape", "L = INT64_MIN", AEPO_ERR_SHAPE, "L", -1); c.in.L = INT64_MIN; break;
        case 12: w = W("shape", "B * L overflows (2^62 x 4)", AEPO_ERR_SHAPE, "B", -1); c.in.B = (int64_t)1 << 62; break;
        case 13:
            w = W("value", "B = 2^40 rows of length 0, no global counts", AEPO_ERR_INVALID_ARGUMENT, "global_tokens", -1);
            c.in.B = (int64_t)1 << 40;
            c.in.L = 0;
            c.in.adv_per_token = 1;
            break;
        case 14:
            w = OK_CASE("B = 2^40 rows of length 0 with global counts (an empty micro-batch)");
            c.in.B = (int64_t)1 << 40;
            c.in.L = 0;
            c.in.adv_per_token = 1;
            c.in.global_tokens = 10;
            break;
        case 15: w = W("value", "mask[2] = 2", AEPO_ERR_INVALID_ARGUMENT, "mask", 2); c.mask[2] = 2; break;
        case 16:
            w = W("value", "reg_rows[1] = 7", AEPO_ERR_INVALID_ARGUMENT, "reg_rows", 1);
            c.reg[1] = 7;
            c.in.reg_rows = c.reg;
            break;
        case 17: w = W("value", "adv_per_token = 2", AEPO_ERR_INVALID_ARGUMENT, "adv_per_token", -1); c.in.adv_per_token = 2; break;
        case 18: w = W("value", "reserved = 1", AEPO_ERR_INVALID_ARGUMENT, "reserved", -1); c.in.reserved = 1; break;
        case 19: w = W("value", "dp_size = 0", AEPO_ERR_INVALID_ARGUMENT, "dp_size", -1); c.in.dp_size = 0; break;
        case 20:
            w = W("value", "dp_size = 2 without global counts", AEPO_ERR_INVALID_ARGUMENT, "global_tokens", -1);
            c.in.dp_size = 2;
            break;
        case 21:
            w = W("value", "global_tokens below this call's tokens", AEPO_ERR_INVALID_ARGUMENT, "global_tokens", -1);
            c.in.global_tokens = 3;
            break;
        case 22: w = W("value", "reg_alpha NaN", AEPO_ERR_INVALID_ARGUMENT, "reg_alpha", -1); c.in.reg_alpha = NAN; break;
        case 23: w = W("value", "reg_alpha +Inf", AEPO_ERR_INVALID_ARGUMENT, "reg_alpha", -1); c.in.reg_alpha = INFINITY; break;
        case 24: w = W("non-finite", "logp[5] NaN (mask = 1)", AEPO_ERR_NON_FINITE, "logp", 5); c.logp[5] = NAN; break;
        case 25: w = W("non-finite", "old_logp[6] +Inf", AEPO_ERR_NON_FINITE, "old_logp", 6); c.old[6] = INFINITY; break;
        case 26: w = W("non-finite", "advantages[1] -Inf (per row)", AEPO_ERR_NON_FINITE, "advantages", 1); c.adv[1] = -INFINITY; break;
        case 27:
            w = W("non-finite", "advantages[4] NaN (per token)", AEPO_ERR_NON_FINITE, "advantages", 4);
            c.in.adv_per_token = 1;
            c.adv[4] = NAN;
            break;
        case 28:
            w = W("non-finite", "ref_logp[0] NaN", AEPO_ERR_NON_FINITE, "ref_logp", 0);
            c.ref[0] = NAN;
            c.in.ref_logp = c.ref;
            break;
        case 29:
            w = W("non-finite", "is_weights[7] +Inf", AEPO_ERR_NON_FINITE, "is_weights", 7);
            c.isw[7] = INFINITY;
            c.in.is_weights = c.isw;
            break;
        case 30:
            w = W("non-finite", "entropy[1] -Inf", AEPO_ERR_NON_FINITE, "entropy", 1);
            c.ent[1] = -INFINITY;
            c.in.entropy = c.ent;
            break;
        case 31:
            w = OK_CASE("NaN in every array at a position with mask = 0");
            c.logp[3] = c.old[3] = c.ref[3] = c.isw[3] = c.ent[3] = NAN;
            c.in.ref_logp = c.ref;
            c.in.is_weights = c.isw;
            c.in.entropy = c.ent;
            break;
        case 32:
            w = OK_CASE("advantage NaN of a regulariser row (taken as 1)");
            c.adv[0] = NAN;
            c.reg[0] = 1;
            c.in.reg_rows = c.reg;
            break;
        case 33: w = OK_CASE("denormal log-probs"); c.logp[0] = -1.4e-45f; c.old[0] = 1.4e-45f; break;
        case 34: w = W("value", "loss.kl_loss_coef > 0 without ref_logp", AEPO_ERR_INVALID_ARGUMENT, "ref_logp", -1); c.h = kl; break;
        case 35: w = W("value", "loss.entropy_coeff != 0 without entropy", AEPO_ERR_INVALID_ARGUMENT, "entropy", -1); c.h = ent; break;
        case 36:
            w = W("overflow", "advantage 3.4e38 times a ratio e (the gradient overflows float32)", AEPO_ERR_NON_FINITE,
                  "grad", 1);
            c.h = tokensum;
            c.in.B = 1;
            c.in.L = 2;
            c.logp[0] = 0; c.old[0] = 0; c.logp[1] = 1; c.old[1] = 0;
            c.mask[0] = c.mask[1] = 1;
            c.adv[0] = 3.4e38f;
            break;
        case 37:
            w = W("overflow", "loss_scale_factor 5e-324 (the weights overflow: the gradient first)", AEPO_ERR_NON_FINITE, "grad", 0);
            c.h = sumnorm;
            break;
        case 39:
            w = W("overflow", "loss_scale_factor 5e-324, grad NULL (the loss overflows double)", AEPO_ERR_NON_FINITE,
                  "value", -1);
            c.h = sumnorm;
            no_grad = 1;
            break;
        case 40:
            w = W("overflow", "loss_scale_factor 1e-300, entropy 3e38 with entropy_coeff 0 (a metric overflows double)",
                  AEPO_ERR_NON_FINITE, "metrics", AEPO_LOSS_METRIC_ENTROPY);
            c.h = sumnorm300;
            for (i = 0; i < N; i++) {
                c.adv[i] = 0;
                c.ent[i] = 3e38f;
            }
            c.in.entropy = c.ent;
            break;
        case 38:
            w = W("value", "weighted regulariser rows with dp_size 2 and no global_reg_tokens", AEPO_ERR_INVALID_ARGUMENT,
                  "global_reg_tokens", -1);
            c.h = weighted;
            c.reg[1] = 1;
            c.in.reg_rows = c.reg;
            c.in.dp_size = 2;
            c.in.global_tokens = 3;
            c.in.global_seqs = 1;
            break;
        default:
            aepo_loss_free(plain); aepo_loss_free(kl); aepo_loss_free(ent); aepo_loss_free(weighted);
            aepo_loss_free(sumnorm); aepo_loss_free(sumnorm300); aepo_loss_free(tokensum);
            return;
        }
        rc = aepo_loss_compute(c.h, in, &loss, no_grad ? NULL : c.grad, no_grad ? NULL : c.gent, NULL, 0, &e);
        expect("aepo_loss_compute", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
    }
}

static void loss_other_cases(void) {
    aepo_loss *h = NULL, *dr = NULL;
    aepo_error e;
    float r[4] = {1, 0, 1, 1}, out[4];
    int64_t g[4] = {0, 0, 1, 1}, len[4] = {3, 4, -1, 2}, idx[4], k = 0, np = 0;
    aepo_loss_inputs in;
    int32_t rc;
    aepo_loss_create(NULL, 0, &h, NULL);
    aepo_loss_create(JSON("{\"advantage\": {\"norm_adv_by_std_in_grpo\": false}}"), &dr, NULL);

    rc = aepo_loss_advantages(h, r, g, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "valid", "valid inputs", rc, &e, AEPO_OK, "", -1);
    rc = aepo_loss_advantages(NULL, r, g, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "loss", -1);
    rc = aepo_loss_advantages(h, r, g, -1, NULL, out, &e);
    expect("aepo_loss_advantages", "shape", "n = -1", rc, &e, AEPO_ERR_SHAPE, "n", -1);
    rc = aepo_loss_advantages(h, NULL, g, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "null", "rewards NULL", rc, &e, AEPO_ERR_NULL_POINTER, "rewards", -1);
    rc = aepo_loss_advantages(h, r, NULL, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "null", "group_ids NULL", rc, &e, AEPO_ERR_NULL_POINTER, "group_ids", -1);
    rc = aepo_loss_advantages(h, r, g, 4, NULL, NULL, &e);
    expect("aepo_loss_advantages", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_loss_advantages(h, NULL, NULL, (int64_t)1 << 62, NULL, NULL, &e);
    expect("aepo_loss_advantages", "null", "n = 2^62, every pointer NULL", rc, &e, AEPO_ERR_NULL_POINTER, "rewards", -1);
    rc = aepo_loss_advantages(h, r, g, 4, len, out, &e);
    expect("aepo_loss_advantages", "value", "lengths[2] = -1", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "lengths", 2);
    r[3] = NAN;
    rc = aepo_loss_advantages(h, r, g, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "non-finite", "rewards[3] NaN", rc, &e, AEPO_ERR_NON_FINITE, "rewards", 3);
    r[3] = -INFINITY;
    rc = aepo_loss_advantages(h, r, g, 4, NULL, out, &e);
    expect("aepo_loss_advantages", "non-finite", "rewards[3] -Inf", rc, &e, AEPO_ERR_NON_FINITE, "rewards", 3);
    {
        float big[3] = {3.4e38f, -3.4e38f, -3.4e38f};
        int64_t g3[3] = {0, 0, 0};
        rc = aepo_loss_advantages(dr, big, g3, 3, NULL, out, &e);
        expect("aepo_loss_advantages", "overflow", "rewards +-3.4e38 without the std (r - mean overflows float32)", rc,
               &e, AEPO_ERR_NON_FINITE, "out", 0);
    }
    r[3] = 1;

    rc = aepo_loss_select_regularizer(h, r, g, 4, 2, 0, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "valid", "valid inputs", rc, &e, AEPO_OK, "", -1);
    rc = aepo_loss_select_regularizer(NULL, r, g, 4, 2, 0, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "loss", -1);
    rc = aepo_loss_select_regularizer(h, r, g, -5, 2, 0, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "shape", "n = -5", rc, &e, AEPO_ERR_SHAPE, "n", -1);
    rc = aepo_loss_select_regularizer(h, r, g, 4, -1, 0, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "value", "k_max = -1", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "k_max", -1);
    rc = aepo_loss_select_regularizer(h, r, g, 4, 2, 2, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "value", "halve = 2", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "halve", -1);
    rc = aepo_loss_select_regularizer(h, r, NULL, 4, 2, 0, idx, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "null", "group_ids NULL", rc, &e, AEPO_ERR_NULL_POINTER, "group_ids", -1);
    rc = aepo_loss_select_regularizer(h, r, g, 4, 2, 0, NULL, 4, &k, &np, &e);
    expect("aepo_loss_select_regularizer", "null", "indices NULL with cap 4", rc, &e, AEPO_ERR_NULL_POINTER, "indices", -1);
    {
        float rr[4] = {1, 0, 1, 0};
        rc = aepo_loss_select_regularizer(h, rr, g, 4, 2, 0, idx, 1, &k, &np, &e);
        expect("aepo_loss_select_regularizer", "shape", "cap 1 for k = 2", rc, &e, AEPO_ERR_BUFFER_TOO_SMALL, "indices", -1);
        rr[2] = INFINITY;
        rc = aepo_loss_select_regularizer(h, rr, g, 4, 2, 0, idx, 4, &k, &np, &e);
        expect("aepo_loss_select_regularizer", "non-finite", "rewards[2] +Inf", rc, &e, AEPO_ERR_NON_FINITE, "rewards", 2);
    }

    rc = aepo_loss_inputs_init(NULL, sizeof in, &e);
    expect("aepo_loss_inputs_init", "null", "in NULL", rc, &e, AEPO_ERR_NULL_POINTER, "in", -1);
    rc = aepo_loss_inputs_init(&in, sizeof in - 8, &e);
    expect("aepo_loss_inputs_init", "value", "struct_size below the first version", rc, &e,
           AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1);
    rc = aepo_loss_inputs_init(&in, (size_t)-1, &e);
    expect("aepo_loss_inputs_init", "value", "struct_size = SIZE_MAX", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "struct_size", -1);
    aepo_loss_free(h);
    aepo_loss_free(dr);
}

/* --------------------------------------------------------------- controller --- */

static void controller_cases(void) {
    aepo_controller *c = NULL, *entropy = NULL, *adaptive = NULL;
    aepo_error e;
    aepo_decision d;
    int64_t count;
    char blob[16384], other[16384];
    size_t n = 0, n2 = 0;
    int32_t rc;
    aepo_controller_create(JSON("{\"controller\": {\"history\": 4}}"), &c, NULL);
    aepo_controller_create(JSON("{\"controller\": {\"statistic\": \"entropy\"}}"), &entropy, NULL);
    aepo_controller_create(JSON("{\"controller\": {\"mode\": \"adaptive\"}}"), &adaptive, NULL);
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;

    rc = aepo_controller_step(c, AEPO_CONTROLLER_STATISTIC_NLL, 0.4, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "valid", "valid inputs", rc, &e, AEPO_OK, "", -1);
    rc = aepo_controller_step(NULL, 0, 0.4, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "controller", -1);
    rc = aepo_controller_step(c, 2, 0.4, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "value", "statistic = 2", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "statistic", -1);
    rc = aepo_controller_step(c, AEPO_CONTROLLER_STATISTIC_ENTROPY, 0.4, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "value", "the entropy to an nll controller", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "nll", -1);
    rc = aepo_controller_step(c, 0, NAN, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "non-finite", "value NaN", rc, &e, AEPO_ERR_NON_FINITE, "nll", -1);
    rc = aepo_controller_step(entropy, AEPO_CONTROLLER_STATISTIC_ENTROPY, INFINITY, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "non-finite", "value +Inf", rc, &e, AEPO_ERR_NON_FINITE, "entropy", -1);
    rc = aepo_controller_step(c, 0, -0.1, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "value", "value -0.1", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "nll", -1);
    rc = aepo_controller_step(c, 0, 0.4, -2, &d, &e);
    expect("aepo_controller_step", "value", "step = -2", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "step", -1);
    rc = aepo_controller_step(c, 0, 0.4, 0, &d, &e);
    expect("aepo_controller_step", "value", "a step before the pending decision's", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "step", -1);
    rc = aepo_controller_step(c, 0, 0.4, INT64_MAX, &d, &e);
    expect("aepo_controller_step", "value", "step = INT64_MAX (step + 1 overflows)", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "step", -1);
    d.struct_size = AEPO_DECISION_SIZE_V1 - 1;
    rc = aepo_controller_step(c, 0, 0.4, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step", "value", "next->struct_size below the first version", rc, &e,
           AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1);
    d.struct_size = sizeof d;
    rc = aepo_controller_step(c, 0, 1e-320, AEPO_CONTROLLER_STEP_NEXT, NULL, &e);
    expect("aepo_controller_step", "valid", "a denormal statistic, next NULL", rc, &e, AEPO_OK, "", -1);

    rc = aepo_controller_step_sums(c, 0, 40, 100, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step_sums", "valid", "valid inputs", rc, &e, AEPO_OK, "", -1);
    rc = aepo_controller_step_sums(c, 0, 40, 0, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step_sums", "value", "count = 0", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "count", -1);
    rc = aepo_controller_step_sums(c, 0, NAN, 100, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step_sums", "non-finite", "sum NaN", rc, &e, AEPO_ERR_NON_FINITE, "nll_sum", -1);
    rc = aepo_controller_step_sums(c, 0, -INFINITY, 100, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step_sums", "non-finite", "sum -Inf", rc, &e, AEPO_ERR_NON_FINITE, "nll_sum", -1);
    rc = aepo_controller_step_sums(c, 0, 1e308, 1, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
    expect("aepo_controller_step_sums", "valid", "sum 1e308", rc, &e, AEPO_OK, "", -1);

    {
        double m[AEPO_LOSS_METRIC_COUNT] = {0};
        m[AEPO_LOSS_METRIC_NLL_MAIN] = 0.5;
        m[AEPO_LOSS_METRIC_N_TOKENS_MAIN] = 64;
        rc = aepo_controller_step_metrics(c, m, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "valid", "valid metrics", rc, &e, AEPO_OK, "", -1);
        rc = aepo_controller_step_metrics(c, NULL, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "null", "metrics NULL", rc, &e, AEPO_ERR_NULL_POINTER, "metrics", -1);
        rc = aepo_controller_step_metrics(c, m, AEPO_LOSS_METRIC_N_TOKENS_REG, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "shape", "n one short of the role metrics", rc, &e, AEPO_ERR_SHAPE,
               "metrics", -1);
        m[AEPO_LOSS_METRIC_NLL_MAIN] = NAN;
        rc = aepo_controller_step_metrics(c, m, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "non-finite", "nll_main NaN", rc, &e, AEPO_ERR_NON_FINITE, "metrics",
               AEPO_LOSS_METRIC_NLL_MAIN);
        m[AEPO_LOSS_METRIC_NLL_MAIN] = 0.5;
        m[AEPO_LOSS_METRIC_N_TOKENS_MAIN] = -3;
        rc = aepo_controller_step_metrics(c, m, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "value", "a negative token count", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
               "metrics", AEPO_LOSS_METRIC_N_TOKENS_MAIN);
        m[AEPO_LOSS_METRIC_N_TOKENS_MAIN] = 0;
        m[AEPO_LOSS_METRIC_N_TOKENS_REG] = 0;
        rc = aepo_controller_step_metrics(c, m, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "value", "no token in the picked rows", rc, &e,
               AEPO_ERR_INVALID_ARGUMENT, "metrics", -1);
        rc = aepo_controller_step_metrics(NULL, m, AEPO_LOSS_METRIC_COUNT, AEPO_CONTROLLER_STEP_NEXT, &d, &e);
        expect("aepo_controller_step_metrics", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "controller", -1);
    }

    rc = aepo_controller_decision(c, NULL, &e);
    expect("aepo_controller_decision", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);
    rc = aepo_controller_decision(NULL, &d, &e);
    expect("aepo_controller_decision", "null", "NULL handle", rc, &e, AEPO_ERR_NULL_POINTER, "controller", -1);
    d.struct_size = 0;
    rc = aepo_controller_decision(c, &d, &e);
    expect("aepo_controller_decision", "value", "struct_size 0", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "struct_size",
           -1);
    d.struct_size = sizeof d;

    rc = aepo_controller_history_count(c, NULL, &e);
    expect("aepo_controller_history_count", "null", "count NULL", rc, &e, AEPO_ERR_NULL_POINTER, "count", -1);
    aepo_controller_history_count(c, &count, NULL);
    rc = aepo_controller_history(c, count, &d, &e);
    expect("aepo_controller_history", "value", "index = count", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "index", -1);
    rc = aepo_controller_history(c, -1, &d, &e);
    expect("aepo_controller_history", "value", "index = -1", rc, &e, AEPO_ERR_INVALID_ARGUMENT, "index", -1);
    rc = aepo_controller_history(c, 0, NULL, &e);
    expect("aepo_controller_history", "null", "out NULL", rc, &e, AEPO_ERR_NULL_POINTER, "out", -1);

    rc = aepo_controller_state_json(c, blob, 4, &n, &e);
    expect("aepo_controller_state_json", "shape", "cap smaller than the text", rc, &e, AEPO_ERR_BUFFER_TOO_SMALL, "buf", -1);
    aepo_controller_state_json(c, blob, sizeof blob, &n, NULL);
    aepo_controller_state_json(adaptive, other, sizeof other, &n2, NULL);
    rc = aepo_controller_restore(c, blob, n, &e);
    expect("aepo_controller_restore", "valid", "its own blob", rc, &e, AEPO_OK, "", -1);
    rc = aepo_controller_restore(c, NULL, 10, &e);
    expect("aepo_controller_restore", "null", "json NULL", rc, &e, AEPO_ERR_NULL_POINTER, "json", -1);
    rc = aepo_controller_restore(c, blob, n / 2, &e);
    expect("aepo_controller_restore", "value", "a truncated blob", rc, &e, AEPO_ERR_STATE, NULL, -1);
    rc = aepo_controller_restore(c, other, n2, &e);
    expect("aepo_controller_restore", "value", "a blob saved by an adaptive controller", rc, &e, AEPO_ERR_STATE,
           "config.mode", -1);
    rc = aepo_controller_restore(c, "{}", 2, &e);
    expect("aepo_controller_restore", "value", "an empty object", rc, &e, AEPO_ERR_STATE, NULL, -1);
    aepo_controller_free(c);
    aepo_controller_free(entropy);
    aepo_controller_free(adaptive);
}

/* ------------------------------------------------------------------ kernels --- */

enum { KR = 3, KV = 5 };

typedef struct kcase {
    float x[KR * KV + 1], lp[KR], ent[KR], t1[KR], out[KR * KV + 1], gl[KR], gh[KR];
    double lse[KR];
    int32_t tg[KR];
    uint8_t mask[KR];
    double T;
    int64_t threads, B, Lr, V, sb, sl;
    const float *xp;
    float *outp;
    int64_t osb, osl;
    /* The inputs struct as the call sees it, with room for a caller's newer, larger version. */
    union {
        aepo_logits_inputs in;
        unsigned char raw[sizeof(aepo_logits_inputs) + 8];
    } u;
} kcase;

static void kbase(kcase *c) {
    static const float X[KR * KV] = {1, 2, 0.5f, -1, 0, 3, -2, 0, 0, 1, -1, -1, 4, 2, 0.25f};
    int i;
    memset(c, 0, sizeof *c);
    memcpy(c->x, X, sizeof X);
    for (i = 0; i < KR; i++) {
        c->tg[i] = i + 1;
        c->mask[i] = 1;
        c->gl[i] = 0.5f;
        c->gh[i] = -0.25f;
    }
    c->T = 0.8;
    c->threads = 1;
    c->B = 1;
    c->Lr = KR;
    c->V = KV;
    c->sb = 0;
    c->sl = KV;
    c->xp = c->x;
    c->outp = c->out;
    c->osb = 0;
    c->osl = KV;
}

/* The case's inputs struct, from the init defaults. `extra` >= 0 makes it a struct 8 bytes
 * larger than this header's, whose first new byte holds `extra`. */
static aepo_logits_inputs *kinputs(kcase *c, const int32_t *tg, const uint8_t *mask, int extra) {
    aepo_logits_inputs *in = &c->u.in;
    aepo_logits_inputs_init(in, sizeof *in, NULL);
    in->logits = c->xp;
    in->B = c->B;
    in->L = c->Lr;
    in->V = c->V;
    in->stride_b = c->sb;
    in->stride_l = c->sl;
    in->targets = tg;
    in->mask = mask;
    in->temperature = c->T;
    in->threads = c->threads;
    if (extra >= 0) {
        in->struct_size = sizeof *in + 8;
        c->u.raw[sizeof *in] = (unsigned char)extra;
    }
    return in;
}

static void logits_inputs_init_cases(void) {
    aepo_logits_inputs in;
    aepo_error e;
    int32_t rc;
    rc = aepo_logits_inputs_init(&in, sizeof in, &e);
    expect("aepo_logits_inputs_init", "valid", "struct_size = sizeof(aepo_logits_inputs)", rc, &e, AEPO_OK, "", -1);
    rc = aepo_logits_inputs_init(NULL, sizeof in, &e);
    expect("aepo_logits_inputs_init", "null", "in NULL", rc, &e, AEPO_ERR_NULL_POINTER, "in", -1);
    rc = aepo_logits_inputs_init(&in, sizeof in - 8, &e);
    expect("aepo_logits_inputs_init", "value", "struct_size below the first version", rc, &e,
           AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1);
    rc = aepo_logits_inputs_init(&in, (size_t)-1, &e);
    expect("aepo_logits_inputs_init", "value", "struct_size = SIZE_MAX", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "struct_size", -1);
}

static void kernels_cases(void) {
    int k;
    for (k = 0;; k++) {
        kcase c;
        aepo_error e;
        want w;
        int32_t rc;
        const int32_t *tg;
        const uint8_t *mask;
        aepo_logits_inputs *in;
        float *lp;
        int extra = -1, null_in = 0, zero_size = 0;
        kbase(&c);
        tg = c.tg;
        mask = c.mask;
        lp = c.lp;
        switch (k) {
        case 0: w = OK_CASE("valid inputs"); break;
        case 1: w = W("null", "in NULL", AEPO_ERR_NULL_POINTER, "in", -1); null_in = 1; break;
        case 2: w = W("null", "logits NULL", AEPO_ERR_NULL_POINTER, "logits", -1); c.xp = NULL; break;
        case 3: w = W("null", "targets NULL with logp wanted", AEPO_ERR_NULL_POINTER, "targets", -1); tg = NULL; break;
        case 4: w = W("value", "struct_size 0", AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1); zero_size = 1; break;
        case 5:
            w = W("value", "struct_size beyond this version with a non-zero byte there", AEPO_ERR_INVALID_ARGUMENT,
                  "struct_size", -1);
            extra = 1;
            break;
        case 6: w = OK_CASE("struct_size beyond this version, extra bytes 0"); extra = 0; break;
        case 7: w = W("shape", "B = -1", AEPO_ERR_SHAPE, "B", -1); c.B = -1; break;
        case 8: w = W("shape", "V = 0 with rows", AEPO_ERR_SHAPE, "V", -1); c.V = 0; break;
        case 9: w = W("shape", "stride_l < V (rows overlap)", AEPO_ERR_SHAPE, "stride_l", -1); c.sl = 2; break;
        case 10: w = OK_CASE("stride_l = -1 (contiguous)"); c.sl = -1; break;
        case 11: w = OK_CASE("B = 3, L = 1, stride_b = -1 (contiguous)"); c.B = KR; c.Lr = 1; c.sb = -1; break;
        case 12:
            w = W("shape", "the view's extent overflows (B = L = 2^31)", AEPO_ERR_SHAPE, "logits", -1);
            c.B = c.Lr = (int64_t)1 << 31;
            c.sl = KV;
            c.sb = ((int64_t)1 << 31) * KV;
            break;
        case 13:
            w = W("shape", "L = 2^62 with contiguous strides (L * V overflows)", AEPO_ERR_SHAPE, "logits", -1);
            c.B = 2;
            c.Lr = (int64_t)1 << 62;
            c.sb = c.sl = -1;
            break;
        case 14: w = W("value", "temperature 0", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); c.T = 0; break;
        case 15: w = W("value", "temperature NaN", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); c.T = NAN; break;
        case 16: w = W("value", "temperature +Inf", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); c.T = INFINITY; break;
        case 17: w = W("value", "threads 0", AEPO_ERR_INVALID_ARGUMENT, "threads", -1); c.threads = 0; break;
        case 18: w = W("value", "threads 257", AEPO_ERR_INVALID_ARGUMENT, "threads", -1); c.threads = 257; break;
        case 19: w = W("value", "mask[1] = 2", AEPO_ERR_INVALID_ARGUMENT, "mask", 1); c.mask[1] = 2; break;
        case 20: w = W("value", "targets[2] = V", AEPO_ERR_INVALID_ARGUMENT, "targets", 2); c.tg[2] = KV; break;
        case 21: w = OK_CASE("targets[0] = -100 under mask = 0"); c.tg[0] = -100; c.mask[0] = 0; break;
        case 22: w = W("non-finite", "logits[1, 3] NaN", AEPO_ERR_NON_FINITE, "logits", 1); c.x[KV + 3] = NAN; break;
        case 23: w = W("non-finite", "logits[0, 0] +Inf", AEPO_ERR_NON_FINITE, "logits", 0); c.x[0] = INFINITY; break;
        case 24: w = OK_CASE("logits[1, 0] -Inf (a banned token)"); c.x[KV] = -INFINITY; break;
        case 25:
            w = W("value", "row 2 all -Inf", AEPO_ERR_INVALID_ARGUMENT, "logits", 2);
            c.x[10] = c.x[11] = c.x[12] = c.x[13] = c.x[14] = -INFINITY;
            break;
        case 26: w = OK_CASE("NaN logits in a row with mask = 0"); c.x[KV + 1] = NAN; c.mask[1] = 0; break;
        case 27: w = OK_CASE("denormal logits"); c.x[2] = 1.4e-45f; c.x[3] = -1.4e-45f; break;
        case 28:
            w = W("overflow", "logits +-3.4e38 in one row (log p overflows float32)", AEPO_ERR_NON_FINITE, "logp", 0);
            c.x[0] = -3.4e38f; c.x[1] = 3.4e38f; c.tg[0] = 0; c.T = 1;
            break;
        case 29: w = W("overflow", "temperature 1e-300 ((x - max) / T overflows)", AEPO_ERR_NON_FINITE, "logits", 0); c.T = 1e-300; break;
        case 30: w = OK_CASE("targets NULL with only entropy and lse wanted"); tg = NULL; lp = NULL; break;
        default: return;
        }
        in = kinputs(&c, tg, mask, extra);
        if (zero_size) in->struct_size = 0;
        rc = aepo_logits_stats(null_in ? NULL : in, lp, c.ent, c.lse, lp ? c.t1 : NULL, NULL, NULL, NULL, &e);
        expect("aepo_logits_stats", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
    }
}

static void backward_cases(void) {
    int k;
    for (k = 0;; k++) {
        kcase c;
        aepo_error e;
        want w;
        int32_t rc;
        const int32_t *tg;
        const float *ent, *gl, *gh;
        const double *lse;
        const aepo_logits_inputs *in;
        int null_in = 0;
        kbase(&c);
        aepo_logits_stats(kinputs(&c, c.tg, c.mask, -1), NULL, c.ent, c.lse, NULL, NULL, NULL, NULL, NULL);
        tg = c.tg;
        ent = c.ent;
        gl = c.gl;
        gh = c.gh;
        lse = c.lse;
        switch (k) {
        case 0: w = OK_CASE("valid inputs (lse and entropy from aepo_logits_stats)"); break;
        case 1: w = W("null", "in NULL", AEPO_ERR_NULL_POINTER, "in", -1); null_in = 1; break;
        case 2: w = OK_CASE("out = logits, the same strides (in place)"); c.outp = c.x; break;
        case 3: w = W("value", "out overlapping logits by one element", AEPO_ERR_INVALID_ARGUMENT, "out", -1); c.outp = c.x + 1; break;
        case 4: w = W("null", "out NULL", AEPO_ERR_NULL_POINTER, "out", -1); c.outp = NULL; break;
        case 5: w = W("null", "lse NULL", AEPO_ERR_NULL_POINTER, "lse", -1); lse = NULL; break;
        case 6: w = W("null", "targets NULL with grad_logp", AEPO_ERR_NULL_POINTER, "targets", -1); tg = NULL; break;
        case 7: w = W("null", "entropy NULL with grad_entropy", AEPO_ERR_NULL_POINTER, "entropy", -1); ent = NULL; break;
        case 8: w = W("shape", "out_stride_l < V (rows overlap)", AEPO_ERR_SHAPE, "out_stride_l", -1); c.osl = 3; break;
        case 9: w = OK_CASE("out_stride_l = -3 (contiguous)"); c.osl = -3; break;
        case 10: w = W("non-finite", "grad_logp[1] NaN", AEPO_ERR_NON_FINITE, "grad_logp", 1); c.gl[1] = NAN; break;
        case 11: w = W("non-finite", "grad_entropy[2] -Inf", AEPO_ERR_NON_FINITE, "grad_entropy", 2); c.gh[2] = -INFINITY; break;
        case 12: w = W("non-finite", "lse[0] NaN", AEPO_ERR_NON_FINITE, "lse", 0); c.lse[0] = NAN; break;
        case 13: w = W("non-finite", "entropy[1] +Inf", AEPO_ERR_NON_FINITE, "entropy", 1); c.ent[1] = INFINITY; break;
        case 14: w = OK_CASE("NaN lse and logits in a row with mask = 0"); c.lse[1] = NAN; c.x[KV] = NAN; c.mask[1] = 0; break;
        case 15: w = OK_CASE("NaN lse in a row whose upstream gradients are 0"); c.lse[2] = NAN; c.gl[2] = c.gh[2] = 0; break;
        case 16:
            w = W("overflow", "lse far below the row's logits (the gradient overflows float32)", AEPO_ERR_NON_FINITE,
                  "out", 0);
            c.lse[0] = -1e30;
            break;
        case 17: w = W("value", "temperature -1", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); c.T = -1; break;
        default: return;
        }
        in = kinputs(&c, tg, c.mask, -1);
        rc = aepo_logits_backward(null_in ? NULL : in, lse, ent, gl, gh, c.outp, c.osb, c.osl, &e);
        expect("aepo_logits_backward", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
    }
}

/* ------------------------------------------------------------------ sampler --- */

static void sampler_cases(void) {
    aepo_sampler *s = NULL;
    int k;
    aepo_sampler_create(JSON("{\"sampler\": {\"top_k\": 3}}"), &s, NULL);
    for (k = 0;; k++) {
        float x[2 * 6] = {1, 2, 3, 0, -1, 0.5f, 0, 0, 1, 1, 2, -3};
        int32_t tok[2];
        float lp[2];
        const float *xp = x;
        int32_t *tp = tok;
        aepo_sampler *h = s;
        int64_t n = 2, v = 6, stride = 6, step = 0, pos = 0, off = 0;
        double T = 1.0;
        const double *Tp = NULL;
        aepo_error e;
        want w;
        int32_t rc;
        switch (k) {
        case 0: w = OK_CASE("valid inputs"); break;
        case 1: w = W("null", "NULL handle", AEPO_ERR_NULL_POINTER, "sampler", -1); h = NULL; break;
        case 2: w = W("null", "logits NULL", AEPO_ERR_NULL_POINTER, "logits", -1); xp = NULL; break;
        case 3: w = W("null", "tokens NULL", AEPO_ERR_NULL_POINTER, "tokens", -1); tp = NULL; break;
        case 4: w = W("shape", "n = -1", AEPO_ERR_SHAPE, "N", -1); n = -1; break;
        case 5: w = W("shape", "V = 0 with rows", AEPO_ERR_SHAPE, "V", -1); v = 0; break;
        case 6: w = W("shape", "row_stride < V", AEPO_ERR_SHAPE, "row_stride", -1); stride = 5; break;
        case 7: w = W("shape", "(n - 1) * row_stride overflows", AEPO_ERR_SHAPE, "logits", -1); n = 3; stride = INT64_MAX / 2; break;
        case 8: w = W("value", "step = -1", AEPO_ERR_INVALID_ARGUMENT, "step", -1); step = -1; break;
        case 9: w = W("value", "position = -1", AEPO_ERR_INVALID_ARGUMENT, "position", -1); pos = -1; break;
        case 10: w = W("value", "row_offset + n overflows", AEPO_ERR_INVALID_ARGUMENT, "row_offset", -1); off = INT64_MAX; break;
        case 11: w = W("value", "temperature 0", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); T = 0; Tp = &T; break;
        case 12: w = W("value", "temperature NaN", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); T = NAN; Tp = &T; break;
        case 13: w = W("value", "temperature 1e-31", AEPO_ERR_INVALID_ARGUMENT, "temperature", -1); T = 1e-31; Tp = &T; break;
        case 14: w = W("non-finite", "logits[1, 2] NaN", AEPO_ERR_NON_FINITE, "logits", 1); x[8] = NAN; break;
        case 15: w = W("non-finite", "logits[0, 5] +Inf", AEPO_ERR_NON_FINITE, "logits", 0); x[5] = INFINITY; break;
        case 16: w = OK_CASE("-Inf logits (never drawn)"); x[0] = x[1] = -INFINITY; break;
        case 17:
            w = W("value", "row 1 all -Inf", AEPO_ERR_INVALID_ARGUMENT, "logits", 1);
            x[6] = x[7] = x[8] = x[9] = x[10] = x[11] = -INFINITY;
            break;
        case 18: w = OK_CASE("logits +-3.4e38"); x[0] = 3.4e38f; x[1] = -3.4e38f; break;
        case 19: w = OK_CASE("n = 0"); n = 0; break;
        case 20: w = W("null", "n = 0 with logits NULL (the sampler wants it anyway)", AEPO_ERR_NULL_POINTER, "logits", -1); n = 0; xp = NULL; break;
        default: aepo_sampler_free(s); return;
        }
        rc = aepo_sampler_sample(h, xp, n, v, stride, step, pos, off, Tp, tp, lp, NULL, NULL, &e);
        expect("aepo_sampler_sample", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
    }
}

/* -------------------------------------------------------------------- fused --- */

enum { FNR = 3, FD = 2, FV = 4 };

/* Head inputs from the init call, then the given fields. */
static aepo_fused_head_inputs head_inputs(const float *X, const float *Wt, const float *bias, const int32_t *tg,
                                          const uint8_t *mask, int64_t n, int64_t d, int64_t v) {
    aepo_fused_head_inputs in;
    aepo_fused_head_inputs_init(&in, sizeof in, NULL);
    in.X = X;
    in.W = Wt;
    in.bias = bias;
    in.targets = tg;
    in.mask = mask;
    in.N = n;
    in.D = d;
    in.V = v;
    return in;
}

static void fused_head_inputs_init_cases(void) {
    aepo_fused_head_inputs in;
    aepo_error e;
    int32_t rc;
    rc = aepo_fused_head_inputs_init(&in, sizeof in, &e);
    expect("aepo_fused_head_inputs_init", "valid", "struct_size = sizeof(aepo_fused_head_inputs)", rc, &e, AEPO_OK,
           "", -1);
    rc = aepo_fused_head_inputs_init(NULL, sizeof in, &e);
    expect("aepo_fused_head_inputs_init", "null", "in NULL", rc, &e, AEPO_ERR_NULL_POINTER, "in", -1);
    rc = aepo_fused_head_inputs_init(&in, sizeof in - 8, &e);
    expect("aepo_fused_head_inputs_init", "value", "struct_size below the first version", rc, &e,
           AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1);
    rc = aepo_fused_head_inputs_init(&in, (size_t)-1, &e);
    expect("aepo_fused_head_inputs_init", "value", "struct_size = SIZE_MAX", rc, &e, AEPO_ERR_INVALID_ARGUMENT,
           "struct_size", -1);
}

static void fused_cases(void) {
    aepo_fused_head *h = NULL;
    aepo_loss *lh = NULL, *klh = NULL;
    int k;
    aepo_fused_head_create(NULL, 0, &h, NULL);
    aepo_loss_create(NULL, 0, &lh, NULL);
    aepo_loss_create(JSON("{\"loss\": {\"kl_loss_coef\": 0.1}}"), &klh, NULL);
    for (k = 0;; k++) {
        float X[FNR * FD] = {1, 0, 0, 1, 0.5f, -0.5f};
        float Wt[FV * FD] = {1, 0, 0, 1, 0.5f, 0.5f, -1, 0};
        float bias[FV] = {0, 0.1f, 0.2f, 0};
        int32_t tg[FNR] = {0, 2, 3};
        uint8_t mask[FNR] = {1, 1, 1};
        float lp[FNR], ent[FNR], gl[FNR] = {1, 0.5f, -1}, dX[FNR * FD], dW[FV * FD], db[FV];
        double lse[FNR];
        float *Xp = X, *Wp = Wt, *lpp = lp;
        const double *lsep = lse;
        const float *entp = ent;
        float *dWp = dW;
        int64_t n = FNR, d = FD, v = FV;
        int op = 0; /* 0 forward, 1 backward */
        aepo_fused_head_inputs in = head_inputs(X, Wt, bias, tg, mask, FNR, FD, FV);
        const aepo_fused_head_inputs *inp = &in;
        size_t size = sizeof in;
        aepo_error e;
        want w;
        int32_t rc;
        memset(dW, 0, sizeof dW);
        memset(db, 0, sizeof db);
        aepo_fused_head_forward(h, &in, NULL, ent, lse, NULL);
        switch (k) {
        case 0: w = OK_CASE("forward: valid inputs"); break;
        case 1: w = W("null", "forward: in NULL", AEPO_ERR_NULL_POINTER, "in", -1); inp = NULL; break;
        case 2: w = W("null", "forward: X NULL", AEPO_ERR_NULL_POINTER, "X", -1); Xp = NULL; break;
        case 3: w = W("value", "forward: struct_size 0", AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1); size = 0; break;
        case 4: w = W("shape", "forward: N = -1", AEPO_ERR_SHAPE, "N", -1); n = -1; break;
        case 5: w = W("shape", "forward: N * D overflows", AEPO_ERR_SHAPE, "X", -1); n = INT64_MAX / 2; d = 4; break;
        case 6:
            w = W("shape", "forward: D = 2^31 (beyond BLAS's 32-bit sizes)", AEPO_ERR_SHAPE, "D", -1);
            n = 0; v = 0; d = (int64_t)1 << 31;
            break;
        case 7: w = W("value", "forward: mask[1] = 3", AEPO_ERR_INVALID_ARGUMENT, "mask", 1); mask[1] = 3; break;
        case 8: w = W("value", "forward: targets[2] = V", AEPO_ERR_INVALID_ARGUMENT, "targets", 2); tg[2] = FV; break;
        case 9: w = OK_CASE("forward: targets[2] = -100 and X NaN under mask = 0"); tg[2] = -100; X[5] = NAN; mask[2] = 0; break;
        case 10: w = W("non-finite", "forward: X[1, 1] NaN", AEPO_ERR_NON_FINITE, "X", 3); X[3] = NAN; break;
        case 11: w = W("non-finite", "forward: W[2, 0] +Inf", AEPO_ERR_NON_FINITE, "W", 4); Wt[4] = INFINITY; break;
        case 12: w = W("non-finite", "forward: bias[3] -Inf", AEPO_ERR_NON_FINITE, "bias", 3); bias[3] = -INFINITY; break;
        case 13: w = W("value", "forward: logp overlapping X", AEPO_ERR_INVALID_ARGUMENT, "logp", -1); lpp = X + 1; break;
        case 14:
            w = W("overflow", "forward: X and W near 1e30 (the logits overflow float32)", AEPO_ERR_NON_FINITE, "X", 0);
            X[0] = 1e30f; Wt[0] = 1e30f;
            break;
        case 15: w = OK_CASE("backward: valid inputs"); op = 1; break;
        case 16: w = W("null", "backward: in NULL", AEPO_ERR_NULL_POINTER, "in", -1); op = 1; inp = NULL; break;
        case 17: w = W("null", "backward: lse NULL", AEPO_ERR_NULL_POINTER, "lse", -1); op = 1; lsep = NULL; break;
        case 18: w = W("non-finite", "backward: grad_logp[0] NaN", AEPO_ERR_NON_FINITE, "grad_logp", 0); op = 1; gl[0] = NAN; break;
        case 19: w = W("non-finite", "backward: lse[1] +Inf", AEPO_ERR_NON_FINITE, "lse", 1); op = 1; lse[1] = INFINITY; break;
        case 20: w = W("value", "backward: dW = W", AEPO_ERR_INVALID_ARGUMENT, "dW", -1); op = 1; dWp = Wt; break;
        case 21: w = W("overflow", "backward: dW holding NaN before the call", AEPO_ERR_NON_FINITE, "dW", 5); op = 1; dW[5] = NAN; break;
        case 22:
            w = W("overflow", "backward: lse far below the logits (not the forward result)", AEPO_ERR_NON_FINITE, "dX", 0);
            op = 1;
            lse[0] = -1e30;
            break;
        case 23: w = OK_CASE("backward: entropy NULL without grad_entropy"); op = 1; entp = NULL; break;
        case 24: w = W("null", "NULL handle", AEPO_ERR_NULL_POINTER, "head", -1); op = 2; break;
        default:
            aepo_fused_head_free(h); aepo_loss_free(lh); aepo_loss_free(klh);
            goto loss_and_grad;
        }
        in = head_inputs(Xp, Wp, bias, tg, mask, n, d, v);
        in.struct_size = size;
        if (op == 0) {
            rc = aepo_fused_head_forward(h, inp, lpp, ent, lse, &e);
            expect("aepo_fused_head_forward", w.kind, w.input + 9, rc, &e, w.status, w.arg, w.index);
        } else if (op == 1) {
            rc = aepo_fused_head_backward(h, inp, lsep, entp, gl, NULL, dX, dWp, db, &e);
            expect("aepo_fused_head_backward", w.kind, w.input + 10, rc, &e, w.status, w.arg, w.index);
        } else {
            rc = aepo_fused_head_forward(NULL, inp, lp, ent, lse, &e);
            expect("aepo_fused_head_forward", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
        }
    }
loss_and_grad:
    aepo_fused_head_create(NULL, 0, &h, NULL);
    aepo_loss_create(NULL, 0, &lh, NULL);
    aepo_loss_create(JSON("{\"loss\": {\"kl_loss_coef\": 0.1}}"), &klh, NULL);
    for (k = 0;; k++) {
        float X[4 * FD] = {1, 0, 0, 1, 0.5f, -0.5f, 0, 0};
        float Wt[FV * FD] = {1, 0, 0, 1, 0.5f, 0.5f, -1, 0};
        int32_t tg[4] = {0, 2, 3, 1};
        uint8_t mask[4] = {1, 1, 1, 0}, mask_copy[4] = {1, 1, 1, 0};
        float old[4] = {-1, -2, -1.5f, 0}, adv[2] = {0.5f, -0.5f}, ent[4] = {1, 1, 1, 1}, dX[4 * FD];
        aepo_fused_head_inputs hin = head_inputs(X, Wt, NULL, tg, NULL, 4, FD, FV);
        aepo_loss_inputs in;
        const aepo_fused_head_inputs *hinp = &hin;
        const aepo_loss_inputs *inp = &in;
        aepo_fused_head *hp = h;
        aepo_loss *l = lh;
        double loss;
        aepo_error e;
        want w;
        int32_t rc;
        aepo_loss_inputs_init(&in, sizeof in, NULL);
        in.B = 2;
        in.L = 2;
        in.old_logp = old;
        in.advantages = adv;
        in.mask = mask;
        switch (k) {
        case 0: w = OK_CASE("valid inputs, in->mask NULL"); break;
        case 1: w = OK_CASE("in->mask = loss_in->mask"); hin.mask = mask; break;
        case 2: w = W("null", "NULL head", AEPO_ERR_NULL_POINTER, "head", -1); hp = NULL; break;
        case 3: w = W("null", "loss NULL", AEPO_ERR_NULL_POINTER, "loss", -1); l = NULL; break;
        case 4: w = W("null", "in NULL", AEPO_ERR_NULL_POINTER, "in", -1); hinp = NULL; break;
        case 5: w = W("null", "loss_in NULL", AEPO_ERR_NULL_POINTER, "loss_in", -1); inp = NULL; break;
        case 6: w = W("value", "in->struct_size 0", AEPO_ERR_INVALID_ARGUMENT, "struct_size", -1); hin.struct_size = 0; break;
        case 7: w = W("value", "loss_in->logp set", AEPO_ERR_INVALID_ARGUMENT, "loss_in.logp", -1); in.logp = old; break;
        case 8: w = W("value", "loss_in->entropy set", AEPO_ERR_INVALID_ARGUMENT, "loss_in.entropy", -1); in.entropy = ent; break;
        case 9:
            w = W("value", "in->mask another array than loss_in->mask (equal values)", AEPO_ERR_INVALID_ARGUMENT, "mask",
                  -1);
            hin.mask = mask_copy;
            break;
        case 10: w = W("shape", "in->N = 3, not loss_in->B * loss_in->L", AEPO_ERR_SHAPE, "N", -1); hin.N = 3; break;
        case 11: w = W("non-finite", "old_logp[1] NaN", AEPO_ERR_NON_FINITE, "old_logp", 1); old[1] = NAN; break;
        case 12: w = W("non-finite", "advantages[0] +Inf", AEPO_ERR_NON_FINITE, "advantages", 0); adv[0] = INFINITY; break;
        case 13: w = OK_CASE("NaN in X and old_logp under mask = 0"); X[6] = NAN; old[3] = NAN; break;
        case 14: w = W("value", "loss.kl_loss_coef > 0 without ref_logp", AEPO_ERR_INVALID_ARGUMENT, "ref_logp", -1); l = klh; break;
        case 15: w = W("shape", "B = -2", AEPO_ERR_SHAPE, "B", -1); in.B = -2; break;
        default:
            aepo_fused_head_free(h); aepo_loss_free(lh); aepo_loss_free(klh);
            return;
        }
        rc = aepo_fused_head_loss_and_grad(hp, l, hinp, inp, &loss, dX, NULL, NULL, NULL, 0, NULL, NULL, &e);
        expect("aepo_fused_head_loss_and_grad", w.kind, w.input, rc, &e, w.status, w.arg, w.index);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--log") == 0) {
        logf_ = fopen(argv[2], "w");
        if (!logf_) { perror(argv[2]); return 2; }
    }
    config_cases();
    create_cases();
    loss_compute_cases();
    loss_other_cases();
    controller_cases();
    kernels_cases();
    backward_cases();
    logits_inputs_init_cases();
    sampler_cases();
    fused_cases();
    fused_head_inputs_init_cases();
    if (logf_) fclose(logf_);
    printf("badinputs: %d cases, %d failed\n", n_cases, n_failed);
    return n_failed == 0 ? 0 : 1;
}
