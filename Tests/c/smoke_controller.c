/* The entropy controller through the installed header and library: known decisions of the
 * reference rule and of a hand-checked PI step, all-reduced sums, error statuses that leave
 * the state alone, save/restore, history and names. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

static aepo_decision fresh(void) {
    aepo_decision d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    return d;
}

static aepo_controller *make(const char *json, aepo_error *err) {
    aepo_controller *ctl = NULL;
    CHECK_STATUS(aepo_controller_create(json, json ? strlen(json) : 0, &ctl, err), AEPO_OK, err);
    return ctl;
}

/* The state blob in a malloc'd buffer (size query, then the call). */
static char *state_of(const aepo_controller *ctl, size_t *len, aepo_error *err) {
    char *buf;
    CHECK_STATUS(aepo_controller_state_json(ctl, NULL, 0, len, err), AEPO_OK, err);
    buf = (char *)malloc(*len + 1);
    CHECK_STATUS(aepo_controller_state_json(ctl, buf, *len + 1, len, err), AEPO_OK, err);
    return buf;
}

int main(void) {
    aepo_error err;
    aepo_decision d = fresh(), e = fresh();
    aepo_controller *ctl, *other;
    char *blob, *after;
    size_t len = 0, len2 = 0;
    int64_t n = 0;
    int i;
    static const double trace[] = {0.62, 0.55, 0.48, 0.51, 0.5, 0.47};

    CHECK(sizeof(aepo_decision) == AEPO_DECISION_SIZE_V2 && AEPO_DECISION_SIZE_V1 == 80);
    CHECK(strcmp(aepo_controller_mode_name(AEPO_CONTROLLER_MODE_ADAPTIVE), "adaptive") == 0);
    CHECK(strcmp(aepo_controller_statistic_name(AEPO_CONTROLLER_STATISTIC_ENTROPY), "entropy") == 0);
    CHECK(strcmp(aepo_controller_statistic_name(AEPO_CONTROLLER_STATISTIC_NLL), "nll") == 0);
    CHECK(strcmp(aepo_controller_reason_name(AEPO_CONTROLLER_REASON_ABOVE_TARGET), "above_target") == 0);
    CHECK(strcmp(aepo_controller_reason_name(99), "unknown") == 0);
    aepo_controller_free(NULL);

    /* Bang-bang with the defaults: target 0.5, T 1.2/0.8, k_max 60, halving above. */
    ctl = make(NULL, &err);
    CHECK_STATUS(aepo_controller_decision(ctl, &d, &err), AEPO_OK, &err);
    CHECK(d.step == 0 && d.temperature == 1.2 && d.k_max == 60 && d.halve == 0);
    CHECK(d.reason == AEPO_CONTROLLER_REASON_INITIAL && d.mode == AEPO_CONTROLLER_MODE_BANG_BANG);
    CHECK(d.statistic == 0.0 && d.target == 0.5 && isnan(d.alpha));
    CHECK(d.struct_size == sizeof d);

    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.7, AEPO_CONTROLLER_STEP_NEXT, &d, &err),
                 AEPO_OK, &err);
    CHECK(d.step == 1 && d.temperature == 0.8 && d.halve == 1 && d.reason == AEPO_CONTROLLER_REASON_ABOVE_TARGET);
    /* A tie with the target is at-or-below: T_high, full k_max. */
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.5, 1, &d, &err), AEPO_OK, &err);
    CHECK(d.step == 2 && d.temperature == 1.2 && d.halve == 0);
    /* All-reduced sums: 330 nats over 600 tokens is 0.55, above the target. */
    CHECK_STATUS(aepo_controller_step_sums(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 330.0, 600, AEPO_CONTROLLER_STEP_NEXT,
                                           &d, &err), AEPO_OK, &err);
    CHECK(d.step == 3 && d.statistic == 330.0 / 600.0 && d.temperature == 0.8);

    /* Bad input: a status naming the argument, and nothing changes. */
    blob = state_of(ctl, &len, &err);
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, nan(""), -1, &d, &err),
                 AEPO_ERR_NON_FINITE, &err);
    CHECK(strcmp(err.argument, "nll") == 0);
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, -0.2, -1, &d, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_ENTROPY, 0.4, -1, &d, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "nll") == 0 && strstr(err.message, "missing") != NULL);
    CHECK_STATUS(aepo_controller_step_sums(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 3.0, 0, -1, &d, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "count") == 0);
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.4, 1, &d, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "step") == 0);
    e.struct_size = 8;
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.4, -1, &e, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "struct_size") == 0 && strstr(err.message, "next->") != NULL);
    e = fresh();
    CHECK_STATUS(aepo_controller_decision(NULL, &e, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "controller") == 0);
    after = state_of(ctl, &len2, &err);
    CHECK(len == len2 && strcmp(blob, after) == 0);
    free(after);

    /* Save, restore into another handle, continue: identical decisions. */
    other = make(NULL, &err);
    CHECK_STATUS(aepo_controller_restore(other, blob, len, &err), AEPO_OK, &err);
    for (i = 0; i < (int)(sizeof trace / sizeof trace[0]); i++) {
        CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, trace[i], -1, &d, &err), AEPO_OK, &err);
        CHECK_STATUS(aepo_controller_step(other, AEPO_CONTROLLER_STATISTIC_NLL, trace[i], -1, &e, &err), AEPO_OK, &err);
        CHECK(memcmp(&d, &e, sizeof d) == 0);
    }
    CHECK_STATUS(aepo_controller_restore(other, "{\"format\": 1}", 13, &err), AEPO_ERR_STATE, &err);
    CHECK(strcmp(err.argument, "format") == 0);
    free(blob);

    /* History: the initial decision and every step since, the pending one last. */
    CHECK_STATUS(aepo_controller_history_count(ctl, &n, &err), AEPO_OK, &err);
    CHECK(n == 10);
    CHECK_STATUS(aepo_controller_history(ctl, n - 1, &e, &err), AEPO_OK, &err);
    CHECK(memcmp(&d, &e, sizeof d) == 0);
    CHECK_STATUS(aepo_controller_history(ctl, n, &e, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    aepo_controller_free(other);
    aepo_controller_free(ctl);

    /* Adaptive, hand-checked: kp 2, ki 0.5, initial statistic on target, so T starts at 1;
     * then e = 0.1 gives dT = 2 * 0.1 + 0.5 * 0.1 = 0.25. */
    ctl = make("{\"controller\": {\"mode\": \"adaptive\", \"initial_entropy\": 0.5, "
               "\"adaptive\": {\"tuning\": \"fixed\", \"kp\": 2, \"ki\": 0.5, \"t_rate\": 1}}}", &err);
    CHECK_STATUS(aepo_controller_decision(ctl, &d, &err), AEPO_OK, &err);
    CHECK(d.temperature == 1.0 && d.mode == AEPO_CONTROLLER_MODE_ADAPTIVE && d.reason == AEPO_CONTROLLER_REASON_INITIAL);
    CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.4, -1, &d, &err), AEPO_OK, &err);
    CHECK_NEAR(d.temperature, 1.25, 1e-15);
    CHECK(d.reason == AEPO_CONTROLLER_REASON_TRACKING && d.halve == 0 && d.k_max == 60 && isnan(d.alpha));
    aepo_controller_free(ctl);

    /* The self-tuning default: neutral first decision with no estimate, then the estimate
     * in the version 2 fields; a version 1 struct gets its 80 bytes only. The statistic
     * from loss metrics: main rows under adaptive. */
    ctl = make("{\"controller\": {\"mode\": \"adaptive\", \"target\": 0.8, \"statistic_rows\": \"main\"}}", &err);
    d = fresh();
    CHECK_STATUS(aepo_controller_decision(ctl, &d, &err), AEPO_OK, &err);
    CHECK(d.temperature == 1.0 && d.reason == AEPO_CONTROLLER_REASON_INITIAL && d.est_delay == -1 && isnan(d.est_gain));
    {
        double m[AEPO_LOSS_METRIC_COUNT];
        double h = 1.0;
        memset(m, 0, sizeof m);
        for (i = 0; i < 60; i++) {
            h += 0.08 * (d.temperature - 1) - 0.02 * (h - 0.1);
            m[AEPO_LOSS_METRIC_NLL_MAIN] = h;
            m[AEPO_LOSS_METRIC_N_TOKENS_MAIN] = 100;
            m[AEPO_LOSS_METRIC_NLL_REG] = h + 0.5;  /* ignored: statistic_rows is "main" */
            m[AEPO_LOSS_METRIC_N_TOKENS_REG] = 20;
            CHECK_STATUS(aepo_controller_step_metrics(ctl, m, AEPO_LOSS_METRIC_COUNT, -1, &d, &err), AEPO_OK, &err);
            CHECK_NEAR(d.statistic, h, 1e-12);
            CHECK(d.temperature >= 0.5 && d.temperature <= 2.0);
        }
        CHECK(d.est_delay >= 0 && d.est_gain > 0 && d.est_feedback > 0 && d.est_confidence > 0 && d.est_confidence <= 1);
        memset(&e, 0xAB, sizeof e);
        e.struct_size = AEPO_DECISION_SIZE_V1;
        CHECK_STATUS(aepo_controller_decision(ctl, &e, &err), AEPO_OK, &err);
        CHECK(e.temperature == d.temperature && ((const unsigned char *)&e)[AEPO_DECISION_SIZE_V1] == 0xAB);
        m[AEPO_LOSS_METRIC_N_TOKENS_MAIN] = 0;
        CHECK_STATUS(aepo_controller_step_metrics(ctl, m, AEPO_LOSS_METRIC_COUNT, -1, &e, &err),
                     AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "metrics") == 0);
    }
    aepo_controller_free(ctl);

    /* The entropy statistic, under its config name and its older spelling "exact": the same
     * controller, which takes the entropy only; the effective config writes the name, as
     * for every alias. */
    {
        static const char *spellings[2] = {"entropy", "exact"};
        aepo_decision by[2];
        int k;
        for (k = 0; k < 2; k++) {
            char json[80], *cfg, want[40];
            size_t n_cfg = 0;
            snprintf(json, sizeof json, "{\"controller\": {\"statistic\": \"%s\"}}", spellings[k]);
            snprintf(want, sizeof want, "\"statistic\": \"entropy\"");
            ctl = make(json, &err);
            CHECK_STATUS(aepo_controller_config_json(ctl, NULL, 0, &n_cfg, &err), AEPO_OK, &err);
            cfg = (char *)malloc(n_cfg + 1);
            CHECK_STATUS(aepo_controller_config_json(ctl, cfg, n_cfg + 1, &n_cfg, &err), AEPO_OK, &err);
            CHECK(strstr(cfg, want) != NULL);
            free(cfg);
            CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_NLL, 0.4, -1, &d, &err),
                         AEPO_ERR_INVALID_ARGUMENT, &err);
            CHECK(strcmp(err.argument, "entropy") == 0);
            by[k] = fresh();
            CHECK_STATUS(aepo_controller_step(ctl, AEPO_CONTROLLER_STATISTIC_ENTROPY, 0.7, -1, &by[k], &err), AEPO_OK,
                         &err);
            aepo_controller_free(ctl);
        }
        CHECK(memcmp(&by[0], &by[1], sizeof by[0]) == 0 && by[0].temperature == 0.8);
    }

    /* Config errors name the JSON path; *out is NULL. */
    ctl = (aepo_controller *)&err;
    CHECK_STATUS(aepo_controller_create("{\"controller\": {\"mode\": \"pid\"}}", 31, &ctl, &err), AEPO_ERR_CONFIG, &err);
    CHECK(ctl == NULL && strcmp(err.argument, "controller.mode") == 0);
    return smoke_finish("smoke_controller");
}
