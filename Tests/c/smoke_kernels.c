/* Logits kernels through the installed header and library: the entropy table of
 * docs/API.md (logits [2, 1, 0, -1]), its dH/dz, a shifted [B, L, V] view written
 * in place, the inputs struct (defaults, contiguous strides, struct_size), and the error
 * paths. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

/* Inputs over `logits` viewed as [B, L, V] with the given strides, from the init defaults. */
static aepo_logits_inputs view(const float *logits, int64_t B, int64_t L, int64_t V, int64_t stride_b,
                               int64_t stride_l, aepo_error *err) {
    aepo_logits_inputs in;
    CHECK_STATUS(aepo_logits_inputs_init(&in, sizeof in, err), AEPO_OK, err);
    in.logits = logits;
    in.B = B;
    in.L = L;
    in.V = V;
    in.stride_b = stride_b;
    in.stride_l = stride_l;
    return in;
}

int main(void) {
    aepo_error err;
    aepo_logits_inputs in;
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

    /* aepo_logits_inputs_init: everything zero but the struct size and the defaults. */
    memset(&in, 0x5a, sizeof in);
    CHECK_STATUS(aepo_logits_inputs_init(&in, sizeof in, &err), AEPO_OK, &err);
    CHECK(in.struct_size == sizeof in && in.logits == NULL && in.targets == NULL && in.mask == NULL);
    CHECK(in.B == 0 && in.L == 0 && in.V == 0);
    CHECK(in.stride_b < 0 && in.stride_l < 0);
    CHECK(in.temperature == 1.0 && in.threads == 1);

    /* The entropy table: H and log p(token 0) at three temperatures, as a 1 x 4 matrix. */
    in = view(x, 1, 1, 4, 0, 4, &err);
    in.targets = target0;
    for (i = 0; i < 3; i++) {
        in.temperature = temps[i];
        CHECK_STATUS(aepo_logits_stats(&in, &logp, &entropy, &lse, &logp_t1, &entropy_sum, &nll_sum, &count, &err),
                     AEPO_OK, &err);
        CHECK_NEAR(entropy, want_h[i], 2e-7);
        CHECK_NEAR(logp, want_logp[i], 2e-7);
        CHECK_NEAR(logp_t1, -0.4401896986, 2e-7);
        CHECK_NEAR(entropy_sum, entropy, 1e-7);
        CHECK_NEAR(nll_sum, -logp, 1e-7);
        CHECK(count == 1);
    }
    printf("T = 1.3: H = %.10f, log p(0) = %.10f, lse = %.10f\n", entropy, logp, lse);

    /* dH/dz at T = 1: grad_entropy = 1, no logp term (targets may then be NULL). */
    in = view(x, 1, 1, 4, 0, 4, &err);
    CHECK_STATUS(aepo_logits_stats(&in, NULL, &entropy, &lse, NULL, NULL, NULL, NULL, &err), AEPO_OK, &err);
    CHECK_STATUS(aepo_logits_backward(&in, &lse, &entropy, NULL, &one, grad, 0, 4, &err), AEPO_OK, &err);
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
        in = view(buf, 2, 3, 4, 16, 4, &err);
        in.targets = targets;
        in.mask = mask;
        in.temperature = 0.7;
        in.threads = 2;
        CHECK_STATUS(aepo_logits_stats(&in, lp, h, ls, NULL, &entropy_sum, &nll_sum, &count, &err), AEPO_OK, &err);
        CHECK(count == 5);
        CHECK(lp[5] == 0.0f && h[5] == 0.0f);
        /* Row 0 is the table row at T = 0.7. */
        CHECK_NEAR(h[0], 0.7020279765, 2e-7);
        CHECK_STATUS(aepo_logits_backward(&in, ls, h, gl, NULL, buf, 16, 4, &err), AEPO_OK, &err);
        /* Each row of (onehot - p) / T sums to 0; the 4th row of each batch is untouched. */
        for (i = 0; i < 5; i++) {
            int r = (i / 3) * 16 + (i % 3) * 4;
            CHECK_NEAR(buf[r] + buf[r + 1] + buf[r + 2] + buf[r + 3], 0.0, 1e-6);
        }
        CHECK(buf[12] == x[0] * 4.0f && buf[28] == x[0] * 8.0f);
        CHECK(buf[16 + 8] == 0.0f && buf[16 + 11] == 0.0f); /* masked row 5 is zeroed */
    }

    /* A negative stride means contiguous: a [2, 3, 4] tensor gives the same bits with its
     * strides (L*V, V) written out, with -1 (the init's default) and with other negative
     * values, and so does its gradient with negative output strides. */
    {
        static const int64_t sb[3] = {12, -1, -3}, sl[3] = {4, -1, -9};
        static const int64_t osb[3] = {12, -1, -5}, osl[3] = {4, -1, -2};
        float data[24], lp[3][6], h[3][6], t1[3][6], g[3][24];
        double ls[3][6], es[3], ns[3];
        int32_t targets[6] = {3, 0, 1, 2, 2, 1};
        uint8_t mask[6] = {1, 1, 0, 1, 1, 1};
        float gl[6] = {0.5f, -1, 2, 1, 0.25f, -0.75f}, gh[6] = {1, 0.5f, 0, -1, 2, 0.125f};
        int64_t cnt[3];
        int k;
        for (j = 0; j < 24; j++) data[j] = (float)((j * 7) % 11) * 0.37f - 1.5f;
        for (k = 0; k < 3; k++) {
            in = view(data, 2, 3, 4, sb[k], sl[k], &err);
            in.targets = targets;
            in.mask = mask;
            in.temperature = 0.9;
            CHECK_STATUS(aepo_logits_stats(&in, lp[k], h[k], ls[k], t1[k], &es[k], &ns[k], &cnt[k], &err), AEPO_OK,
                         &err);
            CHECK(cnt[k] == 5);
            CHECK_STATUS(aepo_logits_backward(&in, ls[k], h[k], gl, gh, g[k], osb[k], osl[k], &err), AEPO_OK, &err);
        }
        for (k = 1; k < 3; k++) {
            CHECK(memcmp(lp[0], lp[k], sizeof lp[0]) == 0 && memcmp(h[0], h[k], sizeof h[0]) == 0);
            CHECK(memcmp(ls[0], ls[k], sizeof ls[0]) == 0 && memcmp(t1[0], t1[k], sizeof t1[0]) == 0);
            CHECK(memcmp(&es[0], &es[k], sizeof es[0]) == 0 && memcmp(&ns[0], &ns[k], sizeof ns[0]) == 0);
            CHECK(memcmp(g[0], g[k], sizeof g[0]) == 0);
        }
        CHECK(g[0][8] == 0.0f && g[0][11] == 0.0f); /* masked row 2 */
        CHECK(g[0][0] != 0.0f && g[0][23] != 0.0f);
    }

    /* A struct_size below the first version's size is rejected, by init and by the calls. */
    {
        aepo_logits_inputs small;
        CHECK_STATUS(aepo_logits_inputs_init(&small, sizeof small - 8, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "struct_size") == 0);
        CHECK_STATUS(aepo_logits_inputs_init(NULL, sizeof small, &err), AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "in") == 0);
        in = view(x, 1, 1, 4, 0, 4, &err);
        in.struct_size = sizeof in - 8;
        CHECK_STATUS(aepo_logits_stats(&in, NULL, &entropy, NULL, NULL, NULL, NULL, NULL, &err),
                     AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "struct_size") == 0);
        CHECK_STATUS(aepo_logits_backward(&in, &lse, &entropy, NULL, &one, grad, -1, -1, &err),
                     AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "struct_size") == 0);
        CHECK_STATUS(aepo_logits_stats(NULL, NULL, &entropy, NULL, NULL, NULL, NULL, NULL, &err),
                     AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "in") == 0);
    }

    /* Errors name the argument and the row. */
    {
        float bad[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        int32_t t2[2] = {0, 1};
        float lp2[2];
        bad[6] = NAN;
        in = view(bad, 1, 2, 4, 0, 4, &err);
        in.targets = t2;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_NON_FINITE, &err);
        CHECK(strcmp(err.argument, "logits") == 0 && err.index == 1 && strstr(err.message, "row 1") != NULL);
        bad[6] = 6;
        in.temperature = 0.0;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_INVALID_ARGUMENT,
                     &err);
        CHECK(strstr(err.message, "sampler.greedy") != NULL);
        in.temperature = 1.0;
        t2[1] = 4;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_INVALID_ARGUMENT,
                     &err);
        CHECK(strcmp(err.argument, "targets") == 0 && err.index == 1);
        t2[1] = 1;
        for (j = 4; j < 8; j++) bad[j] = -INFINITY;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_INVALID_ARGUMENT,
                     &err);
        CHECK(strstr(err.message, "row 1 is all -inf") != NULL);
        in.stride_l = 3;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_SHAPE, &err);
        CHECK(strcmp(err.argument, "stride_l") == 0);
        in.stride_l = 4;
        in.threads = 0;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_INVALID_ARGUMENT,
                     &err);
        CHECK(strcmp(err.argument, "threads") == 0);
        in.threads = 1;
        in.logits = NULL;
        CHECK_STATUS(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, &err), AEPO_ERR_NULL_POINTER,
                     &err);
        CHECK(strcmp(err.argument, "logits") == 0);
        /* err may be NULL. */
        CHECK(aepo_logits_stats(&in, lp2, NULL, NULL, NULL, NULL, NULL, NULL, NULL) == AEPO_ERR_NULL_POINTER);
    }
    return smoke_finish("smoke_kernels");
}
