/* The policy-loss handle through the installed header and library: the vanilla example of
 * docs/API.md's reference values (known numbers), metric names, the metrics by row role,
 * GRPO advantages, the regulariser selection, and errors that name the argument. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

int main(void) {
    static const float logp[8] = {-1.0f, -0.5f, -2.0f, -0.1f, -0.3f, -1.2f, -0.7f, -9.0f};
    static const float old_logp[8] = {-1.2f, -0.4f, -1.0f, -0.1f, -0.3f, -2.7f, -0.2f, -0.5f};
    static const float adv[2] = {1.0f, -1.0f};
    static const uint8_t mask[8] = {1, 1, 1, 0, 1, 1, 1, 1};
    static const float entropy[8] = {0.5f, 1.0f, 1.5f, NAN, 2.0f, 0.5f, 0.75f, 1.25f};
    static const uint8_t reg_rows[2] = {0, 1};
    static const char *cfg = "{\"loss\": {\"clip_ratio_high\": 0.28}}";
    static const char *names[AEPO_LOSS_METRIC_COUNT] = {
        "pg_loss", "pg_clipfrac", "pg_clipfrac_lower", "ppo_kl", "kl_loss", "entropy", "reg_used",
        "n_positive", "reg_token_frac", "n_tokens", "n_seqs", "reg_loss", "nll_main", "entropy_main",
        "n_tokens_main", "nll_reg", "entropy_reg", "n_tokens_reg"};
    aepo_error err;
    aepo_loss *h = NULL;
    aepo_loss_inputs in;
    double loss = 0.0, metrics[AEPO_LOSS_METRIC_COUNT];
    float grad[8], grad_ent[8];
    uint8_t bad_mask[8];
    float bad_logp[8];
    float rewards[5] = {1.0f, 0.0f, 0.0f, 1.0f, 0.5f};
    int64_t groups[5] = {7, 7, 7, 7, 3};
    float out[5];
    int64_t idx[5], k = -1, npos = -1;
    size_t len = 0;
    int i;

    CHECK(aepo_loss_metric_count() == AEPO_LOSS_METRIC_COUNT);
    for (i = 0; i < AEPO_LOSS_METRIC_COUNT; i++) CHECK(strcmp(aepo_loss_metric_name(i), names[i]) == 0);
    CHECK(aepo_loss_metric_name(AEPO_LOSS_METRIC_COUNT) == NULL);

    CHECK_STATUS(aepo_loss_create(cfg, strlen(cfg), &h, &err), AEPO_OK, &err);
    CHECK_STATUS(aepo_loss_config_json(h, NULL, 0, &len, &err), AEPO_OK, &err);
    CHECK(len > 100);

    CHECK_STATUS(aepo_loss_inputs_init(&in, sizeof in, &err), AEPO_OK, &err);
    CHECK(in.struct_size == sizeof in && in.dp_size == 1 && in.global_tokens == -1 && in.reg_alpha < 0);
    in.B = 2;
    in.L = 4;
    in.logp = logp;
    in.old_logp = old_logp;
    in.advantages = adv;
    in.mask = mask;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, grad_ent, metrics, AEPO_LOSS_METRIC_COUNT, &err), AEPO_OK,
                 &err);
    /* The loss example of docs/API.md: token-mean 0.4436971975, clip fractions 2/7 and 1/7, ppo_kl 1.2 (each
     * with verl's +1e-8). The inputs are float32, so the tolerance is 1e-7 relative. */
    CHECK_NEAR(loss, 0.4436971975, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PG_LOSS], 0.4436971975, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC], 0.2857142853, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC_LOWER], 0.1428571427, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PPO_KL], 1.1999999983, 1e-7);
    CHECK(metrics[AEPO_LOSS_METRIC_N_TOKENS] == 7.0 && metrics[AEPO_LOSS_METRIC_N_SEQS] == 2.0);
    CHECK(metrics[AEPO_LOSS_METRIC_REG_USED] == 0.0);
    /* dL/dlogp = -A r / 7 where unclipped: token 0 (r = e^0.2), 1, 2, and 4 (r = 1, A = -1). */
    CHECK_NEAR(grad[0], -1.221402758 / 7, 1e-7);
    CHECK_NEAR(grad[4], 1.0 / 7, 1e-7);
    CHECK(grad[3] == 0.0f && grad[5] == 0.0f && grad[6] == 0.0f && grad[7] == 0.0f);
    for (i = 0; i < 8; i++) CHECK(grad_ent[i] == 0.0f);
    printf("vanilla token-mean loss %.10f, pg_clipfrac %.10f, ppo_kl %.10f\n", loss,
           metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC], metrics[AEPO_LOSS_METRIC_PPO_KL]);
    /* Without reg_rows every valid token is a main-row token: nll_main = 14.7 / 7; no entropy. */
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_NLL_MAIN], 2.1, 1e-7);
    CHECK(metrics[AEPO_LOSS_METRIC_N_TOKENS_MAIN] == 7.0 && metrics[AEPO_LOSS_METRIC_ENTROPY_MAIN] == 0.0);
    CHECK(metrics[AEPO_LOSS_METRIC_NLL_REG] == 0.0 && metrics[AEPO_LOSS_METRIC_ENTROPY_REG] == 0.0 &&
          metrics[AEPO_LOSS_METRIC_N_TOKENS_REG] == 0.0);

    /* Row 1 a regulariser row, with entropy (NaN under mask = 0 is never read): main row 0 has
     * nll (1 + 0.5 + 2) / 3 and entropy 3 / 3; regulariser row 1 has nll 11.2 / 4 and entropy
     * 4.5 / 4. */
    in.entropy = entropy;
    in.reg_rows = reg_rows;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, NULL, NULL, metrics, AEPO_LOSS_METRIC_COUNT, &err), AEPO_OK, &err);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_NLL_MAIN], 3.5 / 3, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_ENTROPY_MAIN], 1.0, 1e-7);
    CHECK(metrics[AEPO_LOSS_METRIC_N_TOKENS_MAIN] == 3.0);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_NLL_REG], 2.8, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_ENTROPY_REG], 1.125, 1e-7);
    CHECK(metrics[AEPO_LOSS_METRIC_N_TOKENS_REG] == 4.0);
    printf("by row role: nll_main %.10f, entropy_main %.10f, nll_reg %.10f, entropy_reg %.10f\n",
           metrics[AEPO_LOSS_METRIC_NLL_MAIN], metrics[AEPO_LOSS_METRIC_ENTROPY_MAIN], metrics[AEPO_LOSS_METRIC_NLL_REG],
           metrics[AEPO_LOSS_METRIC_ENTROPY_REG]);
    in.entropy = NULL;
    in.reg_rows = NULL;

    /* Bad inputs name the argument and the index. */
    memcpy(bad_mask, mask, sizeof bad_mask);
    bad_mask[6] = 2;
    in.mask = bad_mask;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "mask") == 0 && err.index == 6);
    in.mask = mask;
    memcpy(bad_logp, logp, sizeof bad_logp);
    bad_logp[3] = NAN; /* masked: never read */
    bad_logp[5] = INFINITY;
    in.logp = bad_logp;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_ERR_NON_FINITE, &err);
    CHECK(strcmp(err.argument, "logp") == 0 && err.index == 5);
    in.logp = logp;
    in.B = -1;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_ERR_SHAPE, &err);
    CHECK(strcmp(err.argument, "B") == 0);
    in.B = 2;
    in.old_logp = NULL;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, NULL), AEPO_ERR_NULL_POINTER, &err);
    in.old_logp = old_logp;
    CHECK_STATUS(aepo_loss_compute(NULL, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "loss") == 0);
    in.mask = bad_mask;
    memset(bad_mask, 0, sizeof bad_mask);
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "global_tokens") == 0);
    in.global_tokens = 100;
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, NULL, 0, &err), AEPO_OK, &err);
    CHECK(loss == 0.0);

    /* GRPO advantages: +-0.866023904 and the singleton 0.4999995. */
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 5, NULL, out, &err), AEPO_OK, &err);
    CHECK_NEAR(out[0], 0.866023904, 1e-7);
    CHECK_NEAR(out[1], -0.866023904, 1e-7);
    CHECK_NEAR(out[4], 0.4999995, 1e-7);
    /* Positives: rows 0, 3 and 4; halved to 1. */
    CHECK_STATUS(aepo_loss_select_regularizer(h, rewards, groups, 5, 60, 0, idx, 5, &k, &npos, &err), AEPO_OK, &err);
    CHECK(k == 3 && npos == 3 && idx[0] == 0 && idx[1] == 3 && idx[2] == 4);
    CHECK_STATUS(aepo_loss_select_regularizer(h, rewards, groups, 5, 60, 1, idx, 5, &k, &npos, &err), AEPO_OK, &err);
    CHECK(k == 1 && idx[0] == 0);
    CHECK_STATUS(aepo_loss_select_regularizer(h, rewards, groups, 5, 60, 0, idx, 1, &k, &npos, &err),
                 AEPO_ERR_BUFFER_TOO_SMALL, &err);
    CHECK(k == 3);

    aepo_loss_free(h);
    aepo_loss_free(NULL);

    /* An unknown mode is rejected at creation, naming the key. */
    h = (aepo_loss *)&err; /* any non-NULL value: a failed create stores NULL */
    CHECK_STATUS(aepo_loss_create("{\"loss\": {\"policy_loss\": \"sapo\"}}", 33, &h, &err), AEPO_ERR_CONFIG, &err);
    CHECK(strcmp(err.argument, "loss.policy_loss") == 0 && h == NULL);
    return smoke_finish("smoke_loss");
}
