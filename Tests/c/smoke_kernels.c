/* Logits kernels through the installed header and library: the entropy table of
 * docs/API.md (logits [2, 1, 0, -1]), its dH/dz, a shifted [B, L, V] view written
 * in place, and the error paths. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

int main(void) {
    aepo_error err;
    static const float x[4] = {2.0f, 1.0f, 0.0f, -1.0f};
    static const int32_t target0[1] = {0};
    static const double temps[3] = {1.0, 0.7, 1.3};
    static const double want_h[3] = {0.9475369640, 0.7020279765, 1.0907583528};
    static const double want_logp[3] = {-0.4401896986, -0.2706738307, -0.5752478943};
    static const double want_dh[4] = {-0.326688139, 0.116700968, 0.130076206, 0.079910965};
    float logp, entropy, logp_t1, grad[4];
    double lse, entropy_sum, nll_sum;
    int64_t count;
    float one = 1.0f;
    int i, j;

    /* The entropy table: H and log p(token 0) at three temperatures, as a 1 x 4 matrix. */
    for (i = 0; i < 3; i++) {
        CHECK_STATUS(aepo_logits_stats(x, 1, 1, 4, 0, 4, target0, NULL, temps[i], 1, &logp, &entropy, &lse,
                                       &logp_t1, &entropy_sum, &nll_sum, &count, &err), AEPO_OK, &err);
        CHECK_NEAR(entropy, want_h[i], 2e-7);
        CHECK_NEAR(logp, want_logp[i], 2e-7);
        CHECK_NEAR(logp_t1, -0.4401896986, 2e-7);
        CHECK_NEAR(entropy_sum, entropy, 1e-7);
        CHECK_NEAR(nll_sum, -logp, 1e-7);
        CHECK(count == 1);
    }
    printf("T = 1.3: H = %.10f, log p(0) = %.10f, lse = %.10f\n", entropy, logp, lse);

    /* dH/dz at T = 1: grad_entropy = 1, no logp term (targets may then be NULL). */
    CHECK_STATUS(aepo_logits_stats(x, 1, 1, 4, 0, 4, NULL, NULL, 1.0, 1, NULL, &entropy, &lse, NULL, NULL, NULL,
                                   NULL, &err), AEPO_OK, &err);
    CHECK_STATUS(aepo_logits_backward(x, 1, 1, 4, 0, 4, NULL, NULL, 1.0, &lse, &entropy, NULL, &one, grad, 0, 4, 1,
                                      &err), AEPO_OK, &err);
    for (j = 0; j < 4; j++) CHECK_NEAR(grad[j], want_dh[j], 2e-7);
    printf("dH/dz = [%.9f, %.9f, %.9f, %.9f]\n", grad[0], grad[1], grad[2], grad[3]);

    /* A [2, 3, 4] view of [2, 4, 4] storage (the shifted logits[:, :-1]), gradient in place. */
    {
        float buf[2 * 4 * 4];
        int32_t targets[6] = {0, 1, 2, 3, 0, -100};
        uint8_t mask[6] = {1, 1, 1, 1, 1, 0};
        float lp[6], h[6], gl[6] = {1, 1, 1, 1, 1, 1};
        double ls[6];
        for (j = 0; j < 32; j++) buf[j] = x[j % 4] * (float)(1 + j / 4);
        CHECK_STATUS(aepo_logits_stats(buf, 2, 3, 4, 16, 4, targets, mask, 0.7, 2, lp, h, ls, NULL, &entropy_sum,
                                       &nll_sum, &count, &err), AEPO_OK, &err);
        CHECK(count == 5);
        CHECK(lp[5] == 0.0f && h[5] == 0.0f);
        /* Row 0 is the table row at T = 0.7. */
        CHECK_NEAR(h[0], 0.7020279765, 2e-7);
        CHECK_STATUS(aepo_logits_backward(buf, 2, 3, 4, 16, 4, targets, mask, 0.7, ls, h, gl, NULL, buf, 16, 4, 2,
                                          &err), AEPO_OK, &err);
        /* Each row of (onehot - p) / T sums to 0; the 4th row of each batch is untouched. */
        for (i = 0; i < 5; i++) {
            int r = (i / 3) * 16 + (i % 3) * 4;
            CHECK_NEAR(buf[r] + buf[r + 1] + buf[r + 2] + buf[r + 3], 0.0, 1e-6);
        }
        CHECK(buf[12] == x[0] * 4.0f && buf[28] == x[0] * 8.0f);
        CHECK(buf[16 + 8] == 0.0f && buf[16 + 11] == 0.0f); /* masked row 5 is zeroed */
    }

    /* Errors name the argument and the row. */
    {
        float bad[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        int32_t t2[2] = {0, 1};
        float lp2[2];
        bad[6] = NAN;
        CHECK_STATUS(aepo_logits_stats(bad, 1, 2, 4, 0, 4, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_NON_FINITE, &err);
        CHECK(strcmp(err.argument, "logits") == 0 && err.index == 1 && strstr(err.message, "row 1") != NULL);
        bad[6] = 6;
        CHECK_STATUS(aepo_logits_stats(bad, 1, 2, 4, 0, 4, t2, NULL, 0.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strstr(err.message, "sampler.greedy") != NULL);
        t2[1] = 4;
        CHECK_STATUS(aepo_logits_stats(bad, 1, 2, 4, 0, 4, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "targets") == 0 && err.index == 1);
        t2[1] = 1;
        for (j = 4; j < 8; j++) bad[j] = -INFINITY;
        CHECK_STATUS(aepo_logits_stats(bad, 1, 2, 4, 0, 4, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strstr(err.message, "row 1 is all -inf") != NULL);
        CHECK_STATUS(aepo_logits_stats(bad, 1, 2, 4, 0, 3, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_SHAPE, &err);
        CHECK(strcmp(err.argument, "stride_l") == 0);
        CHECK_STATUS(aepo_logits_stats(NULL, 1, 2, 4, 0, 4, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL,
                                       &err), AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "logits") == 0);
        /* err may be NULL. */
        CHECK(aepo_logits_stats(NULL, 1, 2, 4, 0, 4, t2, NULL, 1.0, 1, lp2, NULL, NULL, NULL, NULL, NULL, NULL, NULL)
              == AEPO_ERR_NULL_POINTER);
    }
    return smoke_finish("smoke_kernels");
}
