/* The policy-loss modes and estimators beyond vanilla through the installed header and
 * library: known numbers on the loss example of docs/API.md (logp, old_logp,
 * A = [+1, -1], row 0 with 3 valid tokens, row 1 with 4), Clip-Cov's pick repeated across
 * runs and thread counts, the fused head with a mode that needs a second logits pass, and
 * errors that name the argument. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

static const float LOGP[8] = {-1.0f, -0.5f, -2.0f, -0.1f, -0.3f, -1.2f, -0.7f, -9.0f};
static const float OLD[8] = {-1.2f, -0.4f, -1.0f, -0.1f, -0.3f, -2.7f, -0.2f, -0.5f};
static const float ADV[2] = {1.0f, -1.0f};
static const uint8_t MASK[8] = {1, 1, 1, 0, 1, 1, 1, 1};

static aepo_loss *make(const char *cfg, aepo_error *err) {
    aepo_loss *h = NULL;
    CHECK_STATUS(aepo_loss_create(cfg, strlen(cfg), &h, err), AEPO_OK, err);
    return h;
}

static void inputs(aepo_loss_inputs *in, int64_t B, int64_t L, const float *lp, const float *old, const float *adv,
                   const uint8_t *mask, aepo_error *err) {
    CHECK_STATUS(aepo_loss_inputs_init(in, sizeof *in, err), AEPO_OK, err);
    in->B = B;
    in->L = L;
    in->logp = lp;
    in->old_logp = old;
    in->advantages = adv;
    in->mask = mask;
}

/* One anchor call: the loss and metrics, gradient into grad. */
static double anchor(const char *cfg, float *grad, double *metrics, aepo_error *err) {
    aepo_loss *h = make(cfg, err);
    aepo_loss_inputs in;
    double loss = 0.0;
    inputs(&in, 2, 4, LOGP, OLD, ADV, MASK, err);
    CHECK_STATUS(aepo_loss_compute(h, &in, &loss, grad, NULL, metrics, AEPO_LOSS_METRIC_COUNT, err), AEPO_OK, err);
    aepo_loss_free(h);
    return loss;
}

/* A deterministic batch for the thread-count check: 40 rows of 1000 tokens. */
enum { BB = 40, LL = 1000 };
static float big_lp[BB * LL], big_old[BB * LL], big_adv[BB];
static uint8_t big_mask[BB * LL];
static float grad_a[BB * LL], grad_b[BB * LL];

static void fill_big(void) {
    uint32_t s = 12345u;
    int i;
    for (i = 0; i < BB * LL; i++) {
        s = s * 1664525u + 1013904223u;
        big_old[i] = -4.0f * (float)(s >> 8) / 16777216.0f;
        s = s * 1664525u + 1013904223u;
        big_lp[i] = big_old[i] + 0.8f * ((float)(s >> 8) / 16777216.0f - 0.5f);
        big_mask[i] = (uint8_t)((i % LL) < 200 + (i / LL) * 20);
    }
    for (i = 0; i < BB; i++) big_adv[i] = (float)((i * 37) % 17) / 4.0f - 2.0f;
}

int main(void) {
    static const char *gspo = "{\"loss\": {\"policy_loss\": \"gspo\", \"loss_agg_mode\": \"seq-mean-token-mean\", "
                              "\"clip_ratio_high\": 0.28}}";
    static const char *cispo = "{\"loss\": {\"policy_loss\": \"cispo\", \"clip_ratio_high\": 0.28}}";
    static const char *reinforce = "{\"loss\": {\"policy_loss\": \"reinforce\"}}";
    static const char *clip_cov = "{\"loss\": {\"policy_loss\": \"clip_cov\", \"clip_ratio_high\": 0.28, "
                                  "\"clip_cov_ratio\": 0.5, \"clip_cov_lb\": 0.2}}";
    static const char *kl_cov = "{\"loss\": {\"policy_loss\": \"kl_cov\", \"kl_cov_ratio\": 0.3, \"ppo_kl_coef\": 0.5}}";
    aepo_error err;
    aepo_loss *h = NULL;
    aepo_loss_inputs in;
    double loss, metrics[AEPO_LOSS_METRIC_COUNT], loss_a = 0.0, loss_b = 0.0;
    float grad[8];
    float rewards[5] = {1.0f, 0.0f, 0.0f, 1.0f, 0.5f};
    float passk[4] = {0.2f, 0.9f, 0.4f, 0.1f};
    int64_t groups[5] = {7, 7, 7, 7, 3};
    int64_t lengths[5] = {3, 4, 0, 2, 5};
    float out[5];
    int i, same, threads;

    /* gspo: row ratios e^-0.3 (A = +1, unclipped) and e^-1.875 (A = -1, clipped to 0.8), a
     * sequence mean each: loss (0.8 - e^-0.3) / 2; row 0's gradient -e^-0.3 / (2 * 3). */
    loss = anchor(gspo, grad, metrics, &err);
    CHECK_NEAR(loss, (0.8 - exp(-0.3)) / 2, 1e-7);
    CHECK_NEAR(grad[0], -exp(-0.3) / 6, 1e-7);
    CHECK(grad[4] == 0.0f && grad[7] == 0.0f);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC], 4.0 / (7 + 1e-8), 1e-7);
    printf("gspo loss %.10f\n", loss);

    /* cispo: -A sg(clamp(r, 0.8, 1.28)) logp; token 4 has r = 1, A = -1: dL/dlogp = 1/7. */
    loss = anchor(cispo, grad, metrics, &err);
    CHECK_NEAR(loss, -0.9031683622, 1e-7);
    CHECK_NEAR(grad[4], 1.0 / 7, 1e-7);
    CHECK_NEAR(grad[2], -0.8 / 7, 1e-7); /* r = e^-1 clipped up to 0.8 */

    /* reinforce (= gpg): -A logp, token-mean: (3.5 - 11.2) / 7 = -1.1. */
    loss = anchor(reinforce, grad, metrics, &err);
    CHECK_NEAR(loss, -1.1, 1e-7);
    CHECK_NEAR(grad[0], -1.0 / 7, 1e-7);
    CHECK(metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC] == 0.0);

    /* clip_cov with k = floor(0.5 * 7) = 3 >= its two candidates (tokens 0 and 1): both detached. */
    loss = anchor(clip_cov, grad, metrics, &err);
    CHECK_NEAR(loss, 0.9591156613, 1e-7);
    CHECK(grad[0] == 0.0f && grad[1] == 0.0f);
    CHECK_NEAR(grad[2], -exp(-1.0) / 7, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PG_CLIPFRAC], 2.0 / (7 + 1e-8), 1e-7);

    /* kl_cov: tokens 1 and 7 have the largest covariance and gain 0.5 |logp - old_logp|. */
    loss = anchor(kl_cov, grad, metrics, &err);
    CHECK_NEAR(loss, 1.1277576462, 1e-7);
    CHECK_NEAR(grad[1], (-exp(-0.1) - 0.5) / 7, 1e-7);
    CHECK_NEAR(metrics[AEPO_LOSS_METRIC_PPO_KL], 11.8 / (7 + 1e-8), 1e-7);

    /* Clip-Cov's pick: the same tokens for the same seed and step, whatever loss.threads. */
    fill_big();
    for (threads = 1; threads <= 4; threads++) {
        char cfg[200];
        snprintf(cfg, sizeof cfg,
                 "{\"loss\": {\"policy_loss\": \"clip_cov\", \"clip_cov_ratio\": 0.002, \"seed\": 5, \"threads\": %d}}",
                 threads);
        h = make(cfg, &err);
        inputs(&in, BB, LL, big_lp, big_old, big_adv, big_mask, &err);
        in.step = 77;
        CHECK_STATUS(aepo_loss_compute(h, &in, threads == 1 ? &loss_a : &loss_b, threads == 1 ? grad_a : grad_b, NULL,
                                       NULL, 0, &err), AEPO_OK, &err);
        if (threads > 1) CHECK(loss_b == loss_a && memcmp(grad_a, grad_b, sizeof grad_a) == 0);
        in.step = 78;
        CHECK_STATUS(aepo_loss_compute(h, &in, &loss_b, grad_b, NULL, NULL, 0, &err), AEPO_OK, &err);
        same = memcmp(grad_a, grad_b, sizeof grad_a) == 0;
        CHECK(!same);
        aepo_loss_free(h);
    }

    /* The fused head with gspo (a second logits pass): equal to forward, then the loss. */
    {
        static const float X[8 * 3] = {0.1f, -0.4f, 0.9f, 0.5f, 0.2f, -0.3f, -0.8f, 0.7f, 0.05f, 0.3f, 0.3f, 0.3f,
                                       -0.2f, 0.6f, -0.9f, 0.4f, -0.1f, 0.2f, 0.7f, 0.7f, -0.6f, -0.5f, 0.1f, 0.8f};
        static const float W[5 * 3] = {0.3f, -0.2f, 0.5f, -0.7f, 0.4f, 0.1f, 0.2f, 0.9f, -0.3f, 0.6f, -0.5f, -0.4f,
                                       -0.1f, 0.3f, 0.8f};
        static const int32_t T[8] = {0, 3, 1, -100, 4, 2, 2, 0};
        float lp[8], ent[8], old[8], dX[8 * 3], fused_logp[8];
        double lse[8], fused_loss = 0.0, plain_loss = 0.0;
        aepo_fused_head *f = NULL;
        aepo_fused_head_inputs hin;
        static const char *fcfg = "{\"fused\": {\"chunk_n\": 3, \"chunk_v\": 2}}";
        CHECK_STATUS(aepo_fused_head_create(fcfg, strlen(fcfg), &f, &err), AEPO_OK, &err);
        CHECK_STATUS(aepo_fused_head_inputs_init(&hin, sizeof hin, &err), AEPO_OK, &err);
        hin.X = X;
        hin.W = W;
        hin.targets = T;
        hin.mask = MASK;
        hin.N = 8;
        hin.D = 3;
        hin.V = 5;
        CHECK_STATUS(aepo_fused_head_forward(f, &hin, lp, ent, lse, &err), AEPO_OK, &err);
        static const float adv[2] = {1.0f, -0.25f};
        for (i = 0; i < 8; i++) old[i] = lp[i] - 0.2f * (float)(i % 3);
        h = make(gspo, &err);
        inputs(&in, 2, 4, lp, old, adv, MASK, &err);
        CHECK_STATUS(aepo_loss_compute(h, &in, &plain_loss, NULL, NULL, NULL, 0, &err), AEPO_OK, &err);
        /* Both rows have mean log-ratio 0.2: (-e^0.2 + 0.25 e^0.2) / 2. */
        CHECK_NEAR(plain_loss, -0.375 * exp(0.2), 1e-6);
        inputs(&in, 2, 4, NULL, old, adv, MASK, &err);
        CHECK_STATUS(aepo_fused_head_loss_and_grad(f, h, &hin, &in, &fused_loss, dX, NULL, NULL, NULL, 0, fused_logp,
                                                   NULL, &err), AEPO_OK, &err);
        CHECK(fused_loss == plain_loss && memcmp(fused_logp, lp, sizeof lp) == 0);
        printf("fused gspo loss %.10f\n", fused_loss);
        aepo_loss_free(h);
        aepo_fused_head_free(f);
    }

    /* Estimators: rloo gives +-2/3 and 0 for the singleton; rf++ baseline needs lengths;
     * grpo_passk needs two responses per group. */
    h = make("{\"advantage\": {\"estimator\": \"rloo\"}}", &err);
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 5, NULL, out, &err), AEPO_OK, &err);
    CHECK_NEAR(out[0], 2.0 / 3, 1e-7);
    CHECK_NEAR(out[1], -2.0 / 3, 1e-7);
    CHECK(out[4] == 0.0f);
    aepo_loss_free(h);
    h = make("{\"advantage\": {\"estimator\": \"reinforce_plus_plus_baseline\"}}", &err);
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 5, NULL, out, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "lengths") == 0);
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 5, lengths, out, &err), AEPO_OK, &err);
    CHECK_NEAR(out[0], 0.6094493869, 1e-7);
    CHECK_NEAR(out[1], -1.5236234661, 1e-7);
    CHECK(out[2] == 0.0f);
    aepo_loss_free(h);
    h = make("{\"advantage\": {\"estimator\": \"grpo_passk\"}}", &err);
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 5, NULL, out, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "group_ids") == 0 && err.index == 4);
    /* [1, 0, 0, 1]: rows 0 and 3 tie for the best; row 0 gets 1 - 1 = 0. */
    CHECK_STATUS(aepo_loss_advantages(h, rewards, groups, 4, NULL, out, &err), AEPO_OK, &err);
    CHECK(out[0] == 0.0f && out[1] == 0.0f && out[2] == 0.0f && out[3] == 0.0f);
    /* [0.2, 0.9, 0.4, 0.1]: row 1 gets (0.9 - 0.4) / (std + 1e-6), std = sqrt(0.38 / 3). */
    CHECK_STATUS(aepo_loss_advantages(h, passk, groups, 4, NULL, out, &err), AEPO_OK, &err);
    CHECK_NEAR(out[1], 0.5 / (sqrt(0.38 / 3) + 1e-6), 1e-6);
    CHECK(out[0] == 0.0f && out[2] == 0.0f && out[3] == 0.0f);
    aepo_loss_free(h);

    /* gspo aggregates per sequence only. */
    h = (aepo_loss *)&err;
    CHECK_STATUS(aepo_loss_create("{\"loss\": {\"policy_loss\": \"gspo\"}}", 33, &h, &err), AEPO_ERR_CONFIG, &err);
    CHECK(strcmp(err.argument, "loss.loss_agg_mode") == 0 && h == NULL);
    return smoke_finish("smoke_loss_modes");
}
