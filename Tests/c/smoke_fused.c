/* The fused LM head through the installed header and library: a case small enough to
 * check by hand, the masked variant of it, the loss in one call with the rules tying the
 * head's inputs to the loss inputs, the inputs struct, and errors. */
#include <aepo.h>
#include <stdlib.h>

#include "smoke.h"

/* X [2, 2], W [3, 2], bias [3], T = 0.5: z = (X W^T + b) / T = [[2, 0, 1], [0, 4, 1]],
 * targets [0, 2]. Expected values from the formulas in float64. */
static const float X[4] = {1, 0, 0, 2};
static const float W[6] = {1, 0, 0, 1, 0, 0};
static const float B[3] = {0, 0, 0.5f};
static const int32_t TARGETS[2] = {0, 2};
static const double LSE[2] = {2.40760596444438, 4.06588389856155};
static const double LOGP[2] = {-0.40760596444438, -3.06588389856155};
static const double ENT[2] = {0.83239557772795, 0.27431306923318};

/* Head inputs from the init call (everything zero), then the given fields. */
static aepo_fused_head_inputs head_inputs(const float *x, const float *w, const float *bias, const int32_t *targets,
                                          const uint8_t *mask, int64_t n, int64_t d, int64_t v, aepo_error *err) {
    aepo_fused_head_inputs in;
    CHECK_STATUS(aepo_fused_head_inputs_init(&in, sizeof in, err), AEPO_OK, err);
    in.X = x;
    in.W = w;
    in.bias = bias;
    in.targets = targets;
    in.mask = mask;
    in.N = n;
    in.D = d;
    in.V = v;
    return in;
}

int main(void) {
    aepo_error err;
    aepo_fused_head *h = NULL;
    aepo_loss *lh = NULL;
    aepo_fused_head_inputs hin;
    const char *cfg = "{\"fused\": {\"temperature\": 0.5, \"chunk_n\": 1, \"chunk_v\": 2}}";
    float logp[3], ent[3];
    double lse[3];
    float dX[6], dW[6], db[3];
    float gl[2] = {1, 0};
    int i;

    CHECK_STATUS(aepo_fused_head_create(cfg, strlen(cfg), &h, &err), AEPO_OK, &err);

    /* aepo_fused_head_inputs_init zeroes every field but struct_size; a struct_size below the
     * first version's size is rejected, by init and by the calls. */
    memset(&hin, 0x5a, sizeof hin);
    CHECK_STATUS(aepo_fused_head_inputs_init(&hin, sizeof hin, &err), AEPO_OK, &err);
    CHECK(hin.struct_size == sizeof hin && hin.X == NULL && hin.W == NULL && hin.bias == NULL);
    CHECK(hin.targets == NULL && hin.mask == NULL && hin.N == 0 && hin.D == 0 && hin.V == 0);
    CHECK_STATUS(aepo_fused_head_inputs_init(&hin, sizeof hin - 8, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_fused_head_inputs_init(NULL, sizeof hin, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "in") == 0);
    hin = head_inputs(X, W, B, TARGETS, NULL, 2, 2, 3, &err);
    hin.struct_size = 8;
    CHECK_STATUS(aepo_fused_head_forward(h, &hin, logp, ent, lse, &err), AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_fused_head_backward(h, &hin, lse, ent, gl, NULL, dX, NULL, NULL, &err),
                 AEPO_ERR_INVALID_ARGUMENT, &err);
    CHECK(strcmp(err.argument, "struct_size") == 0);
    CHECK_STATUS(aepo_fused_head_forward(h, NULL, logp, ent, lse, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "in") == 0);

    /* Forward. */
    hin = head_inputs(X, W, B, TARGETS, NULL, 2, 2, 3, &err);
    CHECK_STATUS(aepo_fused_head_forward(h, &hin, logp, ent, lse, &err), AEPO_OK, &err);
    for (i = 0; i < 2; i++) {
        CHECK_NEAR(logp[i], LOGP[i], 1e-6);
        CHECK_NEAR(ent[i], ENT[i], 1e-6);
        CHECK_NEAR(lse[i], LSE[i], 1e-6);
    }

    /* Backward of L = logp[0]: G row 0 = (onehot(0) - p) / T, row 1 = 0. */
    for (i = 0; i < 6; i++) dW[i] = 0;
    for (i = 0; i < 3; i++) db[i] = 0;
    CHECK_STATUS(aepo_fused_head_backward(h, &hin, lse, ent, gl, NULL, dX, dW, db, &err), AEPO_OK, &err);
    CHECK_NEAR(dX[0], 0.66951809, 1e-6);
    CHECK_NEAR(dX[1], -0.18006115, 1e-6);
    CHECK(dX[2] == 0 && dX[3] == 0);
    CHECK_NEAR(dW[0], 0.66951809, 1e-6);
    CHECK_NEAR(dW[2], -0.18006115, 1e-6);
    CHECK_NEAR(dW[4], -0.48945694, 1e-6);
    CHECK(dW[1] == 0 && dW[3] == 0 && dW[5] == 0);
    CHECK_NEAR(db[0], 0.66951809, 1e-6);
    CHECK_NEAR(db[1], -0.18006115, 1e-6);
    CHECK_NEAR(db[2], -0.48945694, 1e-6);
    /* A second call adds into dW and dbias. */
    CHECK_STATUS(aepo_fused_head_backward(h, &hin, lse, ent, gl, NULL, dX, dW, db, &err), AEPO_OK, &err);
    CHECK_NEAR(db[2], 2 * -0.48945694, 1e-6);

    /* The same rows with a masked row between them: NaN hidden state, target -100. */
    {
        float Xm[6];
        int32_t tm[3] = {0, -100, 2};
        uint8_t mask[3] = {1, 0, 1};
        Xm[0] = 1; Xm[1] = 0; Xm[2] = NAN; Xm[3] = NAN; Xm[4] = 0; Xm[5] = 2;
        aepo_fused_head_inputs masked = head_inputs(Xm, W, B, tm, mask, 3, 2, 3, &err);
        CHECK_STATUS(aepo_fused_head_forward(h, &masked, logp, ent, lse, &err), AEPO_OK, &err);
        CHECK_NEAR(logp[0], LOGP[0], 1e-6);
        CHECK(logp[1] == 0 && ent[1] == 0 && lse[1] == 0);
        CHECK_NEAR(logp[2], LOGP[1], 1e-6);
        CHECK_NEAR(ent[2], ENT[1], 1e-6);
    }

    /* The loss in one call: vanilla, token-mean, on-policy (old_logp = logp), A = 1, so the
     * loss is -1 and dL/dlogp = -1/2 per token. */
    CHECK_STATUS(aepo_loss_create(NULL, 0, &lh, &err), AEPO_OK, &err);
    {
        aepo_loss_inputs in;
        float old[2], adv[1] = {1};
        uint8_t mask[2] = {1, 1}, same_values[2] = {1, 1}, second_off[2] = {1, 0};
        double loss = 0, metrics[AEPO_LOSS_METRIC_COUNT], loss2 = 0, metrics2[AEPO_LOSS_METRIC_COUNT];
        float lp2[2], en2[2], dX2[4];
        old[0] = (float)LOGP[0];
        old[1] = (float)LOGP[1];
        CHECK_STATUS(aepo_loss_inputs_init(&in, sizeof in, &err), AEPO_OK, &err);
        in.B = 1;
        in.L = 2;
        in.old_logp = old;
        in.advantages = adv;
        in.mask = mask;
        hin = head_inputs(X, W, B, TARGETS, NULL, 2, 2, 3, &err);
        for (i = 0; i < 6; i++) dW[i] = 0;
        for (i = 0; i < 3; i++) db[i] = 0;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss, dX, dW, db, metrics,
                                                   AEPO_LOSS_METRIC_COUNT, lp2, en2, &err),
                     AEPO_OK, &err);
        CHECK_NEAR(loss, -1.0, 1e-6);
        CHECK_NEAR(metrics[AEPO_LOSS_METRIC_N_TOKENS], 2, 0);
        CHECK_NEAR(metrics[AEPO_LOSS_METRIC_ENTROPY], 0.5533543277566857, 1e-6);
        CHECK_NEAR(lp2[1], LOGP[1], 1e-6);
        CHECK_NEAR(dX[0], -0.33475904, 1e-6);
        CHECK_NEAR(dX[3], 0.93623955, 1e-6);
        CHECK_NEAR(dW[3], 1.8724791, 1e-6);
        CHECK_NEAR(dW[5], -1.90677475, 1e-6);

        /* in->mask may be the loss inputs' mask itself: the same call, the same bits. */
        hin.mask = mask;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss2, dX2, NULL, NULL, metrics2,
                                                   AEPO_LOSS_METRIC_COUNT, NULL, NULL, &err),
                     AEPO_OK, &err);
        CHECK(loss2 == loss && memcmp(metrics2, metrics, sizeof metrics) == 0 && memcmp(dX2, dX, sizeof dX2) == 0);

        /* Any other mask is an error, even with equal values: the loss inputs' mask is the
         * head's mask. */
        hin.mask = same_values;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss2, dX2, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "mask") == 0);

        /* With in->mask NULL the head still takes the loss inputs' mask: a masked token gets
         * logp 0 and no gradient, and the loss is that of the first token alone. */
        hin.mask = NULL;
        in.mask = second_off;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss2, dX2, NULL, NULL, metrics2,
                                                   AEPO_LOSS_METRIC_COUNT, lp2, NULL, &err),
                     AEPO_OK, &err);
        CHECK_NEAR(loss2, -1.0, 1e-6);
        CHECK_NEAR(metrics2[AEPO_LOSS_METRIC_N_TOKENS], 1, 0);
        CHECK(lp2[1] == 0.0f && dX2[2] == 0.0f && dX2[3] == 0.0f);
        CHECK_NEAR(lp2[0], LOGP[0], 1e-6);
        in.mask = mask;

        /* in->N must be B * L of the loss inputs. */
        hin.N = 3;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss2, NULL, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_SHAPE, &err);
        CHECK(strcmp(err.argument, "N") == 0);
        hin.N = 2;

        /* Each missing argument is named. */
        CHECK_STATUS(aepo_fused_head_loss_and_grad(NULL, lh, &hin, &in, &loss2, NULL, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "head") == 0);
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, NULL, &hin, &in, &loss2, NULL, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "loss") == 0);
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, NULL, &in, &loss2, NULL, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "in") == 0);
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, NULL, &loss2, NULL, NULL, NULL, NULL, 0, NULL, NULL,
                                                   &err),
                     AEPO_ERR_NULL_POINTER, &err);
        CHECK(strcmp(err.argument, "loss_in") == 0);

        /* The head computes the log-probs: passing them is an error. */
        in.logp = old;
        CHECK_STATUS(aepo_fused_head_loss_and_grad(h, lh, &hin, &in, &loss, dX, dW, db, NULL, 0, NULL, NULL, &err),
                     AEPO_ERR_INVALID_ARGUMENT, &err);
        CHECK(strcmp(err.argument, "loss_in.logp") == 0);
    }

    /* Errors name the argument. */
    hin = head_inputs(X, NULL, B, TARGETS, NULL, 2, 2, 3, &err);
    CHECK_STATUS(aepo_fused_head_forward(h, &hin, logp, NULL, NULL, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "W") == 0);
    CHECK_STATUS(aepo_fused_head_forward(NULL, &hin, logp, NULL, NULL, &err), AEPO_ERR_NULL_POINTER, &err);
    CHECK(strcmp(err.argument, "head") == 0);
    {
        float Xbad[4] = {1, 0, 0, 2};
        Xbad[3] = INFINITY;
        logp[0] = 42;
        hin = head_inputs(Xbad, W, B, TARGETS, NULL, 2, 2, 3, &err);
        CHECK_STATUS(aepo_fused_head_forward(h, &hin, logp, NULL, NULL, &err), AEPO_ERR_NON_FINITE, &err);
        CHECK(strcmp(err.argument, "X") == 0 && err.index == 3);
        CHECK(logp[0] == 42);
    }
    hin = head_inputs(X, W, B, TARGETS, NULL, 2, -2, 3, &err);
    CHECK_STATUS(aepo_fused_head_forward(h, &hin, logp, NULL, NULL, &err), AEPO_ERR_SHAPE, &err);
    CHECK(strcmp(err.argument, "D") == 0);
    {
        aepo_fused_head *bad = NULL;
        const char *zero = "{\"fused\": {\"chunk_v\": 0}}";
        CHECK_STATUS(aepo_fused_head_create(zero, strlen(zero), &bad, &err), AEPO_ERR_CONFIG, &err);
        CHECK(strcmp(err.argument, "fused.chunk_v") == 0 && bad == NULL);
    }
    {
        size_t len = 0;
        char *buf;
        CHECK_STATUS(aepo_fused_head_config_json(h, NULL, 0, &len, &err), AEPO_OK, &err);
        buf = (char *)malloc(len + 1);
        CHECK_STATUS(aepo_fused_head_config_json(h, buf, len + 1, &len, &err), AEPO_OK, &err);
        CHECK(strstr(buf, "\"temperature\": 0.5") != NULL);
        free(buf);
    }

    aepo_loss_free(lh);
    aepo_fused_head_free(h);
    aepo_fused_head_free(NULL);
    return smoke_finish("smoke_fused");
}
