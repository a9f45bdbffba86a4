/* Fuzzes the entropy controller: a config decoded from the input, then a sequence of calls
 * (step, step_sums, decision, state_json, restore, history, config_json) with statistics,
 * counts, steps, struct sizes, buffer capacities and state blobs decoded from the input
 * (a saved blob with one byte changed, a truncated one, or raw input bytes).
 *
 * Invariants beyond fz_check:
 *   - every decision written is sane (finite temperature > 0, k_max >= 0, halve 0/1, known
 *     mode and reason, finite target >= 0, alpha NaN or finite >= 0, reserved 0), keeps
 *     the caller's struct_size and leaves bytes past the struct it knows untouched;
 *   - a call that fails leaves the controller exactly as it was (its state blob is
 *     byte-identical before and after);
 *   - a saved blob restored into a fresh controller of the same config gives the same blob;
 *   - the last history entry is the pending decision. */
#include "fuzz.h"

#define DECISION_ROOM (sizeof(aepo_decision) + 16)

static char *state_of(const aepo_controller *c, size_t *len) {
    size_t n = 0;
    char *buf;
    int32_t rc = aepo_controller_state_json(c, NULL, 0, &n, NULL);
    FZ_ASSERT(rc == AEPO_OK, "state size query failed");
    buf = (char *)malloc(n + 1);
    if (!buf) abort();
    rc = aepo_controller_state_json(c, buf, n + 1, len, NULL);
    FZ_ASSERT(rc == AEPO_OK && *len == n, "state_json disagrees with its size query");
    return buf;
}

static void check_decision(const unsigned char *room, size_t struct_size) {
    aepo_decision d;
    size_t k;
    memcpy(&d, room, sizeof d);
    FZ_ASSERT(d.struct_size == struct_size, "struct_size changed to %zu", d.struct_size);
    FZ_ASSERT(isfinite(d.temperature) && d.temperature > 0, "decision temperature %g", d.temperature);
    FZ_ASSERT(d.k_max >= 0 && (d.halve == 0 || d.halve == 1), "k_max %lld halve %d", (long long)d.k_max, (int)d.halve);
    FZ_ASSERT(d.mode >= 0 && d.mode < AEPO_CONTROLLER_MODE_COUNT, "mode %d", (int)d.mode);
    FZ_ASSERT(d.reason >= 0 && d.reason < AEPO_CONTROLLER_REASON_COUNT, "reason %d", (int)d.reason);
    FZ_ASSERT(isfinite(d.target) && d.target >= 0, "target %g", d.target);
    FZ_ASSERT(isnan(d.alpha) || (isfinite(d.alpha) && d.alpha >= 0), "alpha %g", d.alpha);
    FZ_ASSERT(isfinite(d.statistic) && isfinite(d.smoothed), "statistic %g smoothed %g", d.statistic, d.smoothed);
    FZ_ASSERT(d.step >= 0 && d.reserved == 0, "step %lld reserved %d", (long long)d.step, (int)d.reserved);
    for (k = sizeof d; k < DECISION_ROOM; k++) FZ_ASSERT(room[k] == 0xab, "byte %zu past the struct was written", k);
}

/* A decision buffer with a decoded struct_size (or NULL). */
static unsigned char *decision_room(fz *f, unsigned char *room, size_t *size) {
    uint8_t c = fz_u8(f);
    memset(room, 0xab, DECISION_ROOM);
    if (c < 16) return NULL;
    if (c < 200) *size = sizeof(aepo_decision);
    else if (c < 220) *size = DECISION_ROOM;
    else if (c < 240) *size = (size_t)fz_below(f, (int64_t)sizeof(aepo_decision));
    else *size = (size_t)-1 - (size_t)fz_below(f, 3);
    memcpy(room, size, sizeof *size);
    return room;
}

static int64_t decode_step(fz *f) {
    uint8_t c = fz_u8(f);
    if (c < 160) return AEPO_CONTROLLER_STEP_NEXT;
    if (c < 240) return c % 40;
    return FZ_EDGE_SIZES[c % FZ_N_EDGE_SIZES];
}

static aepo_controller *make_controller(fz *f, char *json, size_t cap) {
    static const char *const SCHEDULES[] = {
        "{\"kind\": \"constant\"}",
        "{\"kind\": \"linear\", \"end_target\": 0.2, \"start_step\": 2, \"end_step\": 9}",
        "{\"kind\": \"cosine\", \"end_target\": 1.5, \"start_step\": 0, \"end_step\": 4}",
        "{\"kind\": \"piecewise\", \"points\": [{\"step\": 0, \"target\": 0.4}, {\"step\": 3, \"target\": 0.9}]}",
        "{\"kind\": \"linear\", \"end_target\": 0.1, \"start_step\": 5, \"end_step\": 5}",
    };
    static const char *const HIST[] = {"0", "1", "3", "2", "1", "0", "5", "32"};
    aepo_controller *c = NULL;
    aepo_error e;
    uint8_t a = fz_u8(f), b = fz_u8(f);
    int32_t rc;
    snprintf(json, cap,
             "{\"controller\": {\"mode\": \"%s\", \"statistic\": \"%s\", \"target\": %s, \"t_high\": %s, "
             "\"t_low\": %s, \"k_max\": %d, \"halve_above_target\": %s, \"initial_entropy\": %s, "
             "\"hysteresis\": %s, \"history\": %s, \"schedule\": %s, "
             "\"adaptive\": {\"actuator\": \"%s\", \"kp\": %s, \"ki\": %s, \"ema\": %s, \"t_rate\": %s, "
             "\"alpha_max\": %s}}}",
             (a & 1) ? "adaptive" : "bang_bang", (a & 2) ? ((b & 16) ? "exact" : "entropy") : "nll",
             (a & 4) ? "0.5" : "1e-300", (a & 8) ? "1.2" : "1e300", (a & 16) ? "0.8" : "5e-324", (int)(b % 70),
             (a & 32) ? "true" : "false", (a & 64) ? "0" : "2.5", (b & 64) ? "0" : "0.1", HIST[fz_below(f, 8)],
             SCHEDULES[fz_below(f, 5)], (a & 128) ? "alpha" : "temperature", (b & 128) ? "5" : "1e300",
             (b & 1) ? "1.5" : "0", (b & 2) ? "0.9" : "0", (b & 4) ? "0.3" : "1e-300", (b & 8) ? "0.5" : "1e300");
    rc = aepo_controller_create(json, strlen(json), &c, &e);
    fz_check("aepo_controller_create", rc, &e);
    if (rc == AEPO_OK) return c;
    FZ_ASSERT(rc == AEPO_ERR_CONFIG && c == NULL, "controller create: %s", aepo_status_name(rc));
    snprintf(json, cap, "{\"controller\": {\"history\": 4}}");
    rc = aepo_controller_create(json, strlen(json), &c, &e);
    FZ_ASSERT(rc == AEPO_OK, "the fallback config failed: %s", e.message);
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz f = fz_make(data, size);
    char json[1024];
    aepo_controller *c = make_controller(&f, json, sizeof json);
    char *saved = NULL;
    size_t saved_len = 0;
    int op_count = 0;

    while (f.i < f.n && op_count++ < 24) {
        uint8_t op = fz_u8(&f) % 8;
        aepo_error eb, *e = fz_err(&f, &eb);
        unsigned char room[DECISION_ROOM];
        size_t struct_size = 0, before_len = 0, after_len = 0;
        /* Calls that change the controller are compared against its state before them
         * when they fail; the read-only ones every fourth time (state_json is not cheap). */
        int mutating = op == 0 || op == 1 || op == 4;
        int compare = mutating || op_count % 4 == 0;
        char *before = compare ? state_of(c, &before_len) : NULL, *after;
        unsigned char *d;
        int32_t rc = AEPO_OK;
        const char *name = "";
        switch (op) {
        case 0: case 1: {
            int32_t stat = fz_u8(&f) < 240 ? (int32_t)fz_below(&f, 2) : (int32_t)fz_u32(&f);
            double value = fz_double(&f, 0.0, 3.0);
            int64_t step = decode_step(&f);
            d = decision_room(&f, room, &struct_size);
            if (op == 0) {
                name = "aepo_controller_step";
                rc = aepo_controller_step(c, stat, value, step, (aepo_decision *)(void *)d, e);
            } else {
                int64_t count = fz_u8(&f) < 230 ? 1 + fz_below(&f, 100) : FZ_EDGE_SIZES[fz_below(&f, FZ_N_EDGE_SIZES)];
                name = "aepo_controller_step_sums";
                rc = aepo_controller_step_sums(c, stat, value * 50, count, step, (aepo_decision *)(void *)d, e);
            }
            if (rc == AEPO_OK && d) check_decision(room, struct_size);
            break;
        }
        case 2:
            name = "aepo_controller_decision";
            d = decision_room(&f, room, &struct_size);
            rc = aepo_controller_decision(c, (aepo_decision *)(void *)d, e);
            if (rc == AEPO_OK) check_decision(room, struct_size);
            break;
        case 3: { /* save, and check that a fresh controller restores to the same blob */
            aepo_controller *fresh = NULL;
            size_t len2 = 0;
            char *again;
            free(saved);
            saved = state_of(c, &saved_len);
            FZ_ASSERT(aepo_controller_create(json, strlen(json), &fresh, NULL) == AEPO_OK, "fresh controller");
            rc = aepo_controller_restore(fresh, saved, saved_len, e);
            fz_check("aepo_controller_restore (own blob)", rc, e);
            FZ_ASSERT(rc == AEPO_OK, "a controller's own blob does not restore: %s", e ? e->message : "");
            again = state_of(fresh, &len2);
            FZ_ASSERT(len2 == saved_len && memcmp(again, saved, saved_len) == 0, "restore does not round-trip");
            free(again);
            aepo_controller_free(fresh);
            name = "aepo_controller_restore";
            break;
        }
        case 4: { /* restore a damaged or foreign blob */
            char *blob;
            size_t len;
            uint8_t how = fz_u8(&f);
            name = "aepo_controller_restore";
            if (saved && how < 160) {
                blob = (char *)malloc(saved_len + 1);
                memcpy(blob, saved, saved_len);
                len = saved_len;
                if (how < 100 && len > 0) blob[fz_u32(&f) % len] = (char)fz_u8(&f);
                else if (len > 0) len = fz_u32(&f) % len;
            } else {
                len = (size_t)fz_below(&f, 200);
                if (len > f.n - f.i) len = f.n - f.i;
                blob = (char *)malloc(len + 1);
                memcpy(blob, f.p + f.i, len);
                f.i += len;
            }
            rc = aepo_controller_restore(c, (how & 1) && how > 250 ? NULL : blob, len, e);
            free(blob);
            break;
        }
        case 5: {
            int64_t count = -1, index;
            aepo_decision pending;
            name = "aepo_controller_history";
            rc = aepo_controller_history_count(c, fz_u8(&f) < 8 ? NULL : &count, e);
            fz_check("aepo_controller_history_count", rc, e);
            if (rc != AEPO_OK) break;
            if (count == -1) break; /* count was NULL */
            FZ_ASSERT(count >= 0, "history count %lld", (long long)count);
            if (count > 0) {
                pending.struct_size = sizeof pending;
                FZ_ASSERT(aepo_controller_decision(c, &pending, NULL) == AEPO_OK, "decision");
                memset(room, 0xab, DECISION_ROOM);
                ((aepo_decision *)(void *)room)->struct_size = sizeof(aepo_decision);
                FZ_ASSERT(aepo_controller_history(c, count - 1, (aepo_decision *)(void *)room, NULL) == AEPO_OK,
                          "last history entry");
                FZ_ASSERT(memcmp(room, &pending, sizeof pending) == 0,
                          "the last history entry is not the pending decision");
            }
            index = fz_u8(&f) < 200 ? fz_below(&f, 40) - 2 : FZ_EDGE_SIZES[fz_below(&f, FZ_N_EDGE_SIZES)];
            d = decision_room(&f, room, &struct_size);
            rc = aepo_controller_history(c, index, (aepo_decision *)(void *)d, e);
            if (rc == AEPO_OK) {
                FZ_ASSERT(index >= 0 && index < count, "history accepted index %lld of %lld", (long long)index,
                          (long long)count);
                check_decision(room, struct_size);
            }
            break;
        }
        case 6: {
            size_t n = 0, cap = (size_t)fz_below(&f, 255) * 8;
            char *buf = fz_u8(&f) < 32 ? NULL : (char *)malloc(cap + 1);
            name = "aepo_controller_config_json";
            rc = aepo_controller_config_json(c, buf, buf ? cap : (fz_bit(&f) ? 0 : cap), &n, e);
            if (rc == AEPO_OK && buf) FZ_ASSERT(strlen(buf) == n && n < cap, "config_json length");
            if (rc == AEPO_ERR_BUFFER_TOO_SMALL && buf && cap > 0) FZ_ASSERT(buf[0] == 0 && n >= cap, "too-small buffer");
            free(buf);
            break;
        }
        default: {
            size_t n = 0, cap = (size_t)fz_below(&f, 255) * 16;
            char *buf = (char *)malloc(cap + 1);
            name = "aepo_controller_state_json";
            rc = aepo_controller_state_json(c, buf, cap, &n, e);
            if (rc == AEPO_OK) FZ_ASSERT(strlen(buf) == n && n < cap, "state_json length");
            free(buf);
            break;
        }
        }
        fz_check(name, rc, e);
        if (compare) {
            after = state_of(c, &after_len);
            if (rc != AEPO_OK || !mutating)
                FZ_ASSERT(after_len == before_len && memcmp(before, after, before_len) == 0,
                          "%s (%s) changed the controller", name, aepo_status_name(rc));
            free(before);
            free(after);
        }
    }
    {
        aepo_error e;
        fz_check("aepo_controller_step", aepo_controller_step(NULL, 0, 0.5, -1, NULL, &e), &e);
        FZ_ASSERT(e.status == AEPO_ERR_NULL_POINTER, "a NULL controller gave %s", aepo_status_name(e.status));
    }
    free(saved);
    aepo_controller_free(c);
    return 0;
}
