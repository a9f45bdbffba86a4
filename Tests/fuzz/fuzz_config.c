/* Fuzzes the config document: the whole input is the JSON text (not NUL-terminated) given
 * to aepo_config_validate, aepo_config_normalize and every create function.
 *
 * Invariants:
 *   - normalize agrees with validate; its size query, exact-size and too-small buffers
 *     follow the snprintf-style rule;
 *   - a valid document normalises to a fixed point (normalising the output gives the same
 *     bytes) that validates;
 *   - every create function rejects an invalid document with the same status, argument and
 *     message as validate, and *out stays NULL;
 *   - a handle created from a valid document reports the normalised document as its config. */
#include "fuzz.h"

/* The four handle kinds, through one switch (no casts between function types). */
static const char *const KIND_NAMES[4] = {"aepo_loss_create", "aepo_controller_create", "aepo_sampler_create",
                                          "aepo_fused_head_create"};

static int32_t create_kind(int k, const char *json, size_t len, void **out, aepo_error *e) {
    int32_t rc = AEPO_ERR_INTERNAL;
    switch (k) {
    case 0: { aepo_loss *h = (aepo_loss *)*out; rc = aepo_loss_create(json, len, &h, e); *out = h; break; }
    case 1: { aepo_controller *h = (aepo_controller *)*out; rc = aepo_controller_create(json, len, &h, e); *out = h; break; }
    case 2: { aepo_sampler *h = (aepo_sampler *)*out; rc = aepo_sampler_create(json, len, &h, e); *out = h; break; }
    default: { aepo_fused_head *h = (aepo_fused_head *)*out; rc = aepo_fused_head_create(json, len, &h, e); *out = h; break; }
    }
    return rc;
}

static int32_t config_kind(int k, const void *h, char *buf, size_t cap, size_t *len, aepo_error *e) {
    switch (k) {
    case 0: return aepo_loss_config_json((const aepo_loss *)h, buf, cap, len, e);
    case 1: return aepo_controller_config_json((const aepo_controller *)h, buf, cap, len, e);
    case 2: return aepo_sampler_config_json((const aepo_sampler *)h, buf, cap, len, e);
    default: return aepo_fused_head_config_json((const aepo_fused_head *)h, buf, cap, len, e);
    }
}

static void free_kind(int k, void *h) {
    switch (k) {
    case 0: aepo_loss_free((aepo_loss *)h); break;
    case 1: aepo_controller_free((aepo_controller *)h); break;
    case 2: aepo_sampler_free((aepo_sampler *)h); break;
    default: aepo_fused_head_free((aepo_fused_head *)h); break;
    }
}

static char *normalize(const char *json, size_t len, int32_t *rc, aepo_error *e, size_t *out_len) {
    size_t n = 0, n2 = 0;
    char *buf;
    *rc = aepo_config_normalize(json, len, NULL, 0, &n, e);
    fz_check("aepo_config_normalize (size query)", *rc, e);
    if (*rc != AEPO_OK) return NULL;
    buf = (char *)malloc(n + 1);
    if (!buf) abort();
    if (n > 0) {
        /* One byte short: too small, empty string, *len still reported. */
        memset(buf, 'x', n + 1);
        n2 = 0;
        FZ_ASSERT(aepo_config_normalize(json, len, buf, n, &n2, e) == AEPO_ERR_BUFFER_TOO_SMALL,
                  "normalize into %zu bytes for a %zu-byte text did not report a small buffer", n, n);
        FZ_ASSERT(buf[0] == 0 && n2 == n, "a too-small buffer was not left empty with *len set");
    }
    *rc = aepo_config_normalize(json, len, buf, n + 1, &n2, e);
    fz_check("aepo_config_normalize", *rc, e);
    FZ_ASSERT(*rc == AEPO_OK && n2 == n && buf[n] == 0 && strlen(buf) == n,
              "normalize disagreed with its own size query");
    *out_len = n;
    return buf;
}

static void check_handle_config(int k, const void *h, const char *want, size_t want_len) {
    const char *what = KIND_NAMES[k];
    aepo_error e;
    size_t n = 0;
    char *buf;
    int32_t rc = config_kind(k, h, NULL, 0, &n, &e);
    fz_check(what, rc, &e);
    FZ_ASSERT(rc == AEPO_OK && n == want_len, "%s: size %zu, the normalised document has %zu", what, n, want_len);
    buf = (char *)malloc(n + 1);
    if (!buf) abort();
    rc = config_kind(k, h, buf, n + 1, &n, &e);
    FZ_ASSERT(rc == AEPO_OK && memcmp(buf, want, want_len) == 0 && buf[n] == 0,
              "%s differs from the normalised document", what);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *json = (const char *)data;
    aepo_error ev, e;
    int32_t rv, rc;
    size_t nlen = 0;
    char *norm;
    int k;

    rv = aepo_config_validate(json, size, &ev);
    fz_check("aepo_config_validate", rv, &ev);
    FZ_ASSERT(rv == AEPO_OK || rv == AEPO_ERR_CONFIG, "validate returned %s", aepo_status_name(rv));
    /* The same call without an error struct gives the same status. */
    FZ_ASSERT(aepo_config_validate(json, size, NULL) == rv, "validate depends on err being NULL");

    norm = normalize(json, size, &rc, &e, &nlen);
    FZ_ASSERT(rc == rv, "normalize returned %s, validate %s", aepo_status_name(rc), aepo_status_name(rv));
    if (rv != AEPO_OK) {
        FZ_ASSERT(strcmp(e.argument, ev.argument) == 0 && strcmp(e.message, ev.message) == 0,
                  "normalize and validate report different errors: %s / %s", e.message, ev.message);
    } else {
        size_t n2 = 0;
        int32_t rc2;
        char *again;
        FZ_ASSERT(aepo_config_validate(norm, nlen, &e) == AEPO_OK, "the normalised document is invalid: %s", e.message);
        again = normalize(norm, nlen, &rc2, &e, &n2);
        FZ_ASSERT(rc2 == AEPO_OK && n2 == nlen && memcmp(again, norm, nlen) == 0,
                  "normalising is not a fixed point");
        free(again);
    }

    for (k = 0; k < 4; k++) {
        void *h = (void *)&e; /* not NULL, so that a failed create must clear it */
        memset(&e, 0x5a, sizeof e);
        rc = create_kind(k, json, size, &h, &e);
        fz_check(KIND_NAMES[k], rc, &e);
        if (rv != AEPO_OK) {
            FZ_ASSERT(rc == rv && strcmp(e.argument, ev.argument) == 0 && strcmp(e.message, ev.message) == 0,
                      "%s reports %s (%s) for a document validate rejects with %s (%s)", KIND_NAMES[k],
                      aepo_status_name(rc), e.message, aepo_status_name(rv), ev.message);
        } else {
            FZ_ASSERT(rc == AEPO_OK || rc == AEPO_ERR_CONFIG, "%s returned %s for a valid document",
                      KIND_NAMES[k], aepo_status_name(rc));
        }
        if (rc != AEPO_OK) {
            FZ_ASSERT(h == NULL, "%s failed but left *out set", KIND_NAMES[k]);
            continue;
        }
        FZ_ASSERT(h != NULL, "%s succeeded without a handle", KIND_NAMES[k]);
        check_handle_config(k, h, norm, nlen);
        free_kind(k, h);
    }
    free(norm);
    return 0;
}
