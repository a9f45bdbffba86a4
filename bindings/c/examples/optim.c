/* optim.c - Adam; see optim.h. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

int adam_init(adam *opt, int64_t n, double lr) {
    opt->n = n;
    opt->lr = lr;
    opt->b1 = 0.9;
    opt->b2 = 0.999;
    opt->eps = 1e-8;
    opt->t = 0;
    opt->m = calloc((size_t)n, sizeof *opt->m);
    opt->v = calloc((size_t)n, sizeof *opt->v);
    if (opt->m == NULL || opt->v == NULL) {
        adam_free(opt);
        return -1;
    }
    return 0;
}

void adam_step(adam *opt, float *params, const float *grads) {
    int64_t i;
    double c1, c2;
    opt->t++;
    c1 = 1.0 - pow(opt->b1, (double)opt->t);
    c2 = 1.0 - pow(opt->b2, (double)opt->t);
    for (i = 0; i < opt->n; i++) {
        double g = grads[i];
        double m = opt->b1 * opt->m[i] + (1.0 - opt->b1) * g;
        double v = opt->b2 * opt->v[i] + (1.0 - opt->b2) * g * g;
        opt->m[i] = (float)m;
        opt->v[i] = (float)v;
        params[i] -= (float)(opt->lr * (m / c1) / (sqrt(v / c2) + opt->eps));
    }
}

void adam_free(adam *opt) {
    free(opt->m);
    free(opt->v);
    opt->m = NULL;
    opt->v = NULL;
}
