/* ABI guard: the numbers a binary compiled against aepo.h bakes in, pinned as literals.
 *
 * Status values, metric indices, controller codes, size macros, the size and every field
 * offset of each public struct, and the type of every exported function are checked against
 * the installed header at compile time (a wrong value is a compile error, in C and C++),
 * and the names and counts the library reports are checked at run time. Changing any of
 * these breaks binaries built against an older header: it needs a new AEPO_ABI_VERSION and
 * SONAME, and this file changes with it. */
#include <aepo.h>
#include <stddef.h>
#include <string.h>

#include "../c/smoke.h"

#define PIN(name, cond) typedef char abi_pin_##name[(cond) ? 1 : -1]

/* Versions. */
PIN(abi_version, AEPO_ABI_VERSION == 1);

/* Status codes. */
PIN(ok, AEPO_OK == 0);
PIN(invalid, AEPO_ERR_INVALID_ARGUMENT == 1);
PIN(null, AEPO_ERR_NULL_POINTER == 2);
PIN(shape, AEPO_ERR_SHAPE == 3);
PIN(config, AEPO_ERR_CONFIG == 4);
PIN(nonfinite, AEPO_ERR_NON_FINITE == 5);
PIN(small, AEPO_ERR_BUFFER_TOO_SMALL == 6);
PIN(oom, AEPO_ERR_OUT_OF_MEMORY == 7);
PIN(state, AEPO_ERR_STATE == 8);
PIN(internal, AEPO_ERR_INTERNAL == 9);
PIN(status_count, AEPO_STATUS_COUNT == 10);

/* Loss metric indices. */
PIN(m_pg_loss, AEPO_LOSS_METRIC_PG_LOSS == 0);
PIN(m_clipfrac, AEPO_LOSS_METRIC_PG_CLIPFRAC == 1);
PIN(m_clipfrac_lower, AEPO_LOSS_METRIC_PG_CLIPFRAC_LOWER == 2);
PIN(m_ppo_kl, AEPO_LOSS_METRIC_PPO_KL == 3);
PIN(m_kl_loss, AEPO_LOSS_METRIC_KL_LOSS == 4);
PIN(m_entropy, AEPO_LOSS_METRIC_ENTROPY == 5);
PIN(m_reg_used, AEPO_LOSS_METRIC_REG_USED == 6);
PIN(m_n_positive, AEPO_LOSS_METRIC_N_POSITIVE == 7);
PIN(m_reg_token_frac, AEPO_LOSS_METRIC_REG_TOKEN_FRAC == 8);
PIN(m_n_tokens, AEPO_LOSS_METRIC_N_TOKENS == 9);
PIN(m_n_seqs, AEPO_LOSS_METRIC_N_SEQS == 10);
PIN(m_reg_loss, AEPO_LOSS_METRIC_REG_LOSS == 11);
PIN(m_nll_main, AEPO_LOSS_METRIC_NLL_MAIN == 12);
PIN(m_entropy_main, AEPO_LOSS_METRIC_ENTROPY_MAIN == 13);
PIN(m_n_tokens_main, AEPO_LOSS_METRIC_N_TOKENS_MAIN == 14);
PIN(m_nll_reg, AEPO_LOSS_METRIC_NLL_REG == 15);
PIN(m_entropy_reg, AEPO_LOSS_METRIC_ENTROPY_REG == 16);
PIN(m_n_tokens_reg, AEPO_LOSS_METRIC_N_TOKENS_REG == 17);
PIN(m_count, AEPO_LOSS_METRIC_COUNT >= 18); /* appended metrics only ever raise it */

/* Controller codes. */
PIN(mode_bb, AEPO_CONTROLLER_MODE_BANG_BANG == 0);
PIN(mode_ad, AEPO_CONTROLLER_MODE_ADAPTIVE == 1);
PIN(mode_count, AEPO_CONTROLLER_MODE_COUNT == 2);
PIN(stat_nll, AEPO_CONTROLLER_STATISTIC_NLL == 0);
PIN(stat_entropy, AEPO_CONTROLLER_STATISTIC_ENTROPY == 1);
PIN(stat_exact, AEPO_CONTROLLER_STATISTIC_EXACT == 1); /* the alias the header keeps */
PIN(stat_count, AEPO_CONTROLLER_STATISTIC_COUNT == 2);
PIN(r_initial, AEPO_CONTROLLER_REASON_INITIAL == 0);
PIN(r_below, AEPO_CONTROLLER_REASON_AT_OR_BELOW_TARGET == 1);
PIN(r_above, AEPO_CONTROLLER_REASON_ABOVE_TARGET == 2);
PIN(r_hold, AEPO_CONTROLLER_REASON_HYSTERESIS_HOLD == 3);
PIN(r_tracking, AEPO_CONTROLLER_REASON_TRACKING == 4);
PIN(r_sat_high, AEPO_CONTROLLER_REASON_SATURATED_HIGH == 5);
PIN(r_sat_low, AEPO_CONTROLLER_REASON_SATURATED_LOW == 6);
PIN(r_rate, AEPO_CONTROLLER_REASON_RATE_LIMITED == 7);
PIN(r_unreachable, AEPO_CONTROLLER_REASON_UNREACHABLE == 8);
PIN(r_count, AEPO_CONTROLLER_REASON_COUNT >= 9);
PIN(step_next, AEPO_CONTROLLER_STEP_NEXT == -1);

/* aepo_error. */
PIN(err_arg_size, AEPO_ERROR_ARGUMENT_SIZE == 64);
PIN(err_msg_size, AEPO_ERROR_MESSAGE_SIZE == 320);
PIN(err_size, sizeof(aepo_error) == 400);
PIN(err_status, offsetof(aepo_error, status) == 0);
PIN(err_reserved, offsetof(aepo_error, reserved) == 4);
PIN(err_index, offsetof(aepo_error, index) == 8);
PIN(err_argument, offsetof(aepo_error, argument) == 16);
PIN(err_message, offsetof(aepo_error, message) == 80);

/* aepo_loss_inputs, version 1 (x86-64 LP64). */
PIN(in_size, sizeof(aepo_loss_inputs) == 144);
PIN(in_struct_size, offsetof(aepo_loss_inputs, struct_size) == 0);
PIN(in_B, offsetof(aepo_loss_inputs, B) == 8);
PIN(in_L, offsetof(aepo_loss_inputs, L) == 16);
PIN(in_logp, offsetof(aepo_loss_inputs, logp) == 24);
PIN(in_old_logp, offsetof(aepo_loss_inputs, old_logp) == 32);
PIN(in_advantages, offsetof(aepo_loss_inputs, advantages) == 40);
PIN(in_mask, offsetof(aepo_loss_inputs, mask) == 48);
PIN(in_ref_logp, offsetof(aepo_loss_inputs, ref_logp) == 56);
PIN(in_is_weights, offsetof(aepo_loss_inputs, is_weights) == 64);
PIN(in_entropy, offsetof(aepo_loss_inputs, entropy) == 72);
PIN(in_reg_rows, offsetof(aepo_loss_inputs, reg_rows) == 80);
PIN(in_adv_per_token, offsetof(aepo_loss_inputs, adv_per_token) == 88);
PIN(in_reserved, offsetof(aepo_loss_inputs, reserved) == 92);
PIN(in_reg_alpha, offsetof(aepo_loss_inputs, reg_alpha) == 96);
PIN(in_global_tokens, offsetof(aepo_loss_inputs, global_tokens) == 104);
PIN(in_global_seqs, offsetof(aepo_loss_inputs, global_seqs) == 112);
PIN(in_global_reg_tokens, offsetof(aepo_loss_inputs, global_reg_tokens) == 120);
PIN(in_dp_size, offsetof(aepo_loss_inputs, dp_size) == 128);
PIN(in_step, offsetof(aepo_loss_inputs, step) == 136);

/* aepo_logits_inputs, version 1. */
PIN(li_size, sizeof(aepo_logits_inputs) == 88);
PIN(li_struct_size, offsetof(aepo_logits_inputs, struct_size) == 0);
PIN(li_logits, offsetof(aepo_logits_inputs, logits) == 8);
PIN(li_B, offsetof(aepo_logits_inputs, B) == 16);
PIN(li_L, offsetof(aepo_logits_inputs, L) == 24);
PIN(li_V, offsetof(aepo_logits_inputs, V) == 32);
PIN(li_stride_b, offsetof(aepo_logits_inputs, stride_b) == 40);
PIN(li_stride_l, offsetof(aepo_logits_inputs, stride_l) == 48);
PIN(li_targets, offsetof(aepo_logits_inputs, targets) == 56);
PIN(li_mask, offsetof(aepo_logits_inputs, mask) == 64);
PIN(li_temperature, offsetof(aepo_logits_inputs, temperature) == 72);
PIN(li_threads, offsetof(aepo_logits_inputs, threads) == 80);

/* aepo_fused_head_inputs, version 1. */
PIN(fi_size, sizeof(aepo_fused_head_inputs) == 72);
PIN(fi_struct_size, offsetof(aepo_fused_head_inputs, struct_size) == 0);
PIN(fi_X, offsetof(aepo_fused_head_inputs, X) == 8);
PIN(fi_W, offsetof(aepo_fused_head_inputs, W) == 16);
PIN(fi_bias, offsetof(aepo_fused_head_inputs, bias) == 24);
PIN(fi_targets, offsetof(aepo_fused_head_inputs, targets) == 32);
PIN(fi_mask, offsetof(aepo_fused_head_inputs, mask) == 40);
PIN(fi_N, offsetof(aepo_fused_head_inputs, N) == 48);
PIN(fi_D, offsetof(aepo_fused_head_inputs, D) == 56);
PIN(fi_V, offsetof(aepo_fused_head_inputs, V) == 64);

/* aepo_decision, versions 1 and 2. */
PIN(dec_v1, AEPO_DECISION_SIZE_V1 == 80);
PIN(dec_size, sizeof(aepo_decision) == 144);
PIN(dec_size_v1, AEPO_DECISION_SIZE_V1 == 80);
PIN(dec_size_v2, AEPO_DECISION_SIZE_V2 == 144);
PIN(dec_struct_size, offsetof(aepo_decision, struct_size) == 0);
PIN(dec_step, offsetof(aepo_decision, step) == 8);
PIN(dec_temperature, offsetof(aepo_decision, temperature) == 16);
PIN(dec_alpha, offsetof(aepo_decision, alpha) == 24);
PIN(dec_target, offsetof(aepo_decision, target) == 32);
PIN(dec_statistic, offsetof(aepo_decision, statistic) == 40);
PIN(dec_smoothed, offsetof(aepo_decision, smoothed) == 48);
PIN(dec_k_max, offsetof(aepo_decision, k_max) == 56);
PIN(dec_halve, offsetof(aepo_decision, halve) == 64);
PIN(dec_mode, offsetof(aepo_decision, mode) == 68);
PIN(dec_reason, offsetof(aepo_decision, reason) == 72);
PIN(dec_reserved, offsetof(aepo_decision, reserved) == 76);
PIN(dec_est_gain, offsetof(aepo_decision, est_gain) == 80);
PIN(dec_est_same_step, offsetof(aepo_decision, est_same_step) == 88);
PIN(dec_est_process_noise, offsetof(aepo_decision, est_process_noise) == 96);
PIN(dec_est_measurement_noise, offsetof(aepo_decision, est_measurement_noise) == 104);
PIN(dec_est_horizon, offsetof(aepo_decision, est_horizon) == 112);
PIN(dec_est_feedback, offsetof(aepo_decision, est_feedback) == 120);
PIN(dec_est_confidence, offsetof(aepo_decision, est_confidence) == 128);
PIN(dec_est_delay, offsetof(aepo_decision, est_delay) == 136);
PIN(dec_reserved2, offsetof(aepo_decision, reserved2) == 140);

/* The type of every exported function: a changed signature does not compile (-Werror). */
struct abi_functions {
    const char *(*version_string)(void);
    int32_t (*version_number)(void);
    int32_t (*abi_version)(void);
    const char *(*status_name)(int32_t);
    int32_t (*default_config_json)(char *, size_t, size_t *, aepo_error *);
    int32_t (*config_validate)(const char *, size_t, aepo_error *);
    int32_t (*config_normalize)(const char *, size_t, char *, size_t, size_t *, aepo_error *);
    int32_t (*loss_metric_count)(void);
    const char *(*loss_metric_name)(int32_t);
    int32_t (*loss_inputs_init)(aepo_loss_inputs *, size_t, aepo_error *);
    int32_t (*loss_create)(const char *, size_t, aepo_loss **, aepo_error *);
    void (*loss_free)(aepo_loss *);
    int32_t (*loss_config_json)(const aepo_loss *, char *, size_t, size_t *, aepo_error *);
    int32_t (*loss_compute)(const aepo_loss *, const aepo_loss_inputs *, double *, float *, float *, double *, size_t,
                            aepo_error *);
    int32_t (*loss_advantages)(const aepo_loss *, const float *, const int64_t *, int64_t, const int64_t *, float *,
                               aepo_error *);
    int32_t (*loss_select_regularizer)(const aepo_loss *, const float *, const int64_t *, int64_t, int64_t, int32_t,
                                       int64_t *, size_t, int64_t *, int64_t *, aepo_error *);
    const char *(*controller_mode_name)(int32_t);
    const char *(*controller_statistic_name)(int32_t);
    const char *(*controller_reason_name)(int32_t);
    int32_t (*controller_create)(const char *, size_t, aepo_controller **, aepo_error *);
    void (*controller_free)(aepo_controller *);
    int32_t (*controller_config_json)(const aepo_controller *, char *, size_t, size_t *, aepo_error *);
    int32_t (*controller_decision)(const aepo_controller *, aepo_decision *, aepo_error *);
    int32_t (*controller_step)(aepo_controller *, int32_t, double, int64_t, aepo_decision *, aepo_error *);
    int32_t (*controller_step_sums)(aepo_controller *, int32_t, double, int64_t, int64_t, aepo_decision *,
                                    aepo_error *);
    int32_t (*controller_step_metrics)(aepo_controller *, const double *, size_t, int64_t, aepo_decision *,
                                       aepo_error *);
    int32_t (*controller_state_json)(const aepo_controller *, char *, size_t, size_t *, aepo_error *);
    int32_t (*controller_restore)(aepo_controller *, const char *, size_t, aepo_error *);
    int32_t (*controller_history_count)(const aepo_controller *, int64_t *, aepo_error *);
    int32_t (*controller_history)(const aepo_controller *, int64_t, aepo_decision *, aepo_error *);
    int32_t (*logits_inputs_init)(aepo_logits_inputs *, size_t, aepo_error *);
    int32_t (*logits_stats)(const aepo_logits_inputs *, float *, float *, double *, float *, double *, double *,
                            int64_t *, aepo_error *);
    int32_t (*logits_backward)(const aepo_logits_inputs *, const double *, const float *, const float *,
                               const float *, float *, int64_t, int64_t, aepo_error *);
    int32_t (*sampler_create)(const char *, size_t, aepo_sampler **, aepo_error *);
    void (*sampler_free)(aepo_sampler *);
    int32_t (*sampler_config_json)(const aepo_sampler *, char *, size_t, size_t *, aepo_error *);
    int32_t (*sampler_sample)(aepo_sampler *, const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                              const double *, int32_t *, float *, float *, int32_t *, aepo_error *);
    int32_t (*fused_head_create)(const char *, size_t, aepo_fused_head **, aepo_error *);
    void (*fused_head_free)(aepo_fused_head *);
    int32_t (*fused_head_config_json)(const aepo_fused_head *, char *, size_t, size_t *, aepo_error *);
    int32_t (*fused_head_inputs_init)(aepo_fused_head_inputs *, size_t, aepo_error *);
    int32_t (*fused_head_forward)(const aepo_fused_head *, const aepo_fused_head_inputs *, float *, float *, double *,
                                  aepo_error *);
    int32_t (*fused_head_backward)(const aepo_fused_head *, const aepo_fused_head_inputs *, const double *,
                                   const float *, const float *, const float *, float *, float *, float *,
                                   aepo_error *);
    int32_t (*fused_head_loss_and_grad)(const aepo_fused_head *, const aepo_loss *, const aepo_fused_head_inputs *,
                                        const aepo_loss_inputs *, double *, float *, float *, float *, double *,
                                        size_t, float *, float *, aepo_error *);
    int32_t (*runtime_info)(char *, size_t, size_t *, aepo_error *);
};

static const struct abi_functions FUNCTIONS = {
    aepo_version_string, aepo_version_number, aepo_abi_version, aepo_status_name, aepo_default_config_json,
    aepo_config_validate, aepo_config_normalize, aepo_loss_metric_count, aepo_loss_metric_name,
    aepo_loss_inputs_init, aepo_loss_create, aepo_loss_free, aepo_loss_config_json, aepo_loss_compute,
    aepo_loss_advantages, aepo_loss_select_regularizer, aepo_controller_mode_name, aepo_controller_statistic_name,
    aepo_controller_reason_name, aepo_controller_create, aepo_controller_free, aepo_controller_config_json,
    aepo_controller_decision, aepo_controller_step, aepo_controller_step_sums, aepo_controller_step_metrics,
    aepo_controller_state_json,
    aepo_controller_restore, aepo_controller_history_count, aepo_controller_history, aepo_logits_inputs_init,
    aepo_logits_stats, aepo_logits_backward, aepo_sampler_create, aepo_sampler_free, aepo_sampler_config_json,
    aepo_sampler_sample, aepo_fused_head_create, aepo_fused_head_free, aepo_fused_head_config_json,
    aepo_fused_head_inputs_init, aepo_fused_head_forward, aepo_fused_head_backward, aepo_fused_head_loss_and_grad,
    aepo_runtime_info,
};

static const char *const STATUS_NAMES[] = {
    "AEPO_OK", "AEPO_ERR_INVALID_ARGUMENT", "AEPO_ERR_NULL_POINTER", "AEPO_ERR_SHAPE", "AEPO_ERR_CONFIG",
    "AEPO_ERR_NON_FINITE", "AEPO_ERR_BUFFER_TOO_SMALL", "AEPO_ERR_OUT_OF_MEMORY", "AEPO_ERR_STATE",
    "AEPO_ERR_INTERNAL",
};
static const char *const METRIC_NAMES[] = {
    "pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "kl_loss", "entropy", "reg_used", "n_positive",
    "reg_token_frac", "n_tokens", "n_seqs", "reg_loss", "nll_main", "entropy_main", "n_tokens_main", "nll_reg",
    "entropy_reg", "n_tokens_reg",
};
static const char *const REASON_NAMES[] = {
    "initial", "at_or_below_target", "above_target", "hysteresis_hold", "tracking", "saturated_high",
    "saturated_low", "rate_limited", "unreachable",
};

int main(void) {
    int i;
    aepo_loss_inputs in;
    aepo_logits_inputs kin;
    aepo_fused_head_inputs hin;
    aepo_decision d;
    aepo_controller *c = NULL;
    aepo_error e;

    /* The library is the one this header describes. */
    CHECK(FUNCTIONS.abi_version() == AEPO_ABI_VERSION);
    CHECK(FUNCTIONS.version_number() == AEPO_VERSION_NUMBER);
    CHECK(strcmp(FUNCTIONS.version_string(), AEPO_VERSION_STRING) == 0);

    for (i = 0; i < AEPO_STATUS_COUNT; i++) CHECK(strcmp(aepo_status_name(i), STATUS_NAMES[i]) == 0);
    CHECK(strcmp(aepo_status_name(AEPO_STATUS_COUNT), "AEPO_ERR_UNKNOWN") == 0);
    CHECK(strcmp(aepo_status_name(-1), "AEPO_ERR_UNKNOWN") == 0);

    CHECK(aepo_loss_metric_count() == AEPO_LOSS_METRIC_COUNT);
    for (i = 0; i < (int)(sizeof METRIC_NAMES / sizeof METRIC_NAMES[0]); i++)
        CHECK(strcmp(aepo_loss_metric_name(i), METRIC_NAMES[i]) == 0);
    CHECK(aepo_loss_metric_name(-1) == NULL && aepo_loss_metric_name(AEPO_LOSS_METRIC_COUNT) == NULL);

    CHECK(strcmp(aepo_controller_mode_name(0), "bang_bang") == 0);
    CHECK(strcmp(aepo_controller_mode_name(1), "adaptive") == 0);
    CHECK(strcmp(aepo_controller_mode_name(2), "unknown") == 0);
    CHECK(strcmp(aepo_controller_statistic_name(0), "nll") == 0);
    CHECK(strcmp(aepo_controller_statistic_name(1), "entropy") == 0);
    CHECK(strcmp(aepo_controller_statistic_name(2), "unknown") == 0);
    for (i = 0; i < 9; i++) CHECK(strcmp(aepo_controller_reason_name(i), REASON_NAMES[i]) == 0);
    CHECK(strcmp(aepo_controller_reason_name(AEPO_CONTROLLER_REASON_COUNT), "unknown") == 0);

    /* The library agrees on the struct sizes: the first version is the minimum it takes,
     * and one size below it is the same status, naming struct_size, for every struct. */
    CHECK_STATUS(aepo_loss_inputs_init(&in, sizeof in, &e), AEPO_OK, &e);
    CHECK(in.struct_size == 144 && in.reg_alpha == -1 && in.global_tokens == -1 && in.dp_size == 1);
    CHECK_STATUS(aepo_loss_inputs_init(&in, sizeof in - 1, &e), AEPO_ERR_INVALID_ARGUMENT, &e);
    CHECK(strcmp(e.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_logits_inputs_init(&kin, sizeof kin, &e), AEPO_OK, &e);
    CHECK(kin.struct_size == 88 && kin.temperature == 1 && kin.threads == 1 && kin.stride_b < 0 && kin.stride_l < 0);
    CHECK_STATUS(aepo_logits_inputs_init(&kin, sizeof kin - 1, &e), AEPO_ERR_INVALID_ARGUMENT, &e);
    CHECK(strcmp(e.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_fused_head_inputs_init(&hin, sizeof hin, &e), AEPO_OK, &e);
    CHECK(hin.struct_size == 72 && hin.X == NULL && hin.N == 0);
    CHECK_STATUS(aepo_fused_head_inputs_init(&hin, sizeof hin - 1, &e), AEPO_ERR_INVALID_ARGUMENT, &e);
    CHECK(strcmp(e.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_controller_create(NULL, 0, &c, &e), AEPO_OK, &e);
    memset(&d, 0, sizeof d);
    d.struct_size = AEPO_DECISION_SIZE_V1 - 1;
    CHECK_STATUS(aepo_controller_decision(c, &d, &e), AEPO_ERR_INVALID_ARGUMENT, &e);
    CHECK(strcmp(e.argument, "struct_size") == 0);
    d.struct_size = AEPO_DECISION_SIZE_V1;
    CHECK_STATUS(aepo_controller_decision(c, &d, &e), AEPO_OK, &e);
    CHECK(d.struct_size == 80 && d.reason == AEPO_CONTROLLER_REASON_INITIAL && d.mode == AEPO_CONTROLLER_MODE_BANG_BANG);
    /* A version 1 caller's struct: nothing past its 80 bytes is written. */
    memset(&d, 0xAB, sizeof d);
    d.struct_size = AEPO_DECISION_SIZE_V1;
    CHECK_STATUS(aepo_controller_decision(c, &d, &e), AEPO_OK, &e);
    CHECK(((const unsigned char *)&d)[AEPO_DECISION_SIZE_V1] == 0xAB && d.reserved == 0);
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    CHECK_STATUS(aepo_controller_decision(c, &d, &e), AEPO_OK, &e);
    CHECK(d.struct_size == 144 && d.est_delay == -1 && d.est_gain != d.est_gain && d.reserved2 == 0);
    aepo_controller_free(c);

    return smoke_finish("abi");
}
