/* optim.h - Adam, written out, for the example trainer.
 *
 * libaepo computes the loss and its gradients; the optimizer belongs to the trainer. This is
 * Adam (Kingma & Ba) with bias correction, as torch.optim.Adam and the Python demo do it:
 *   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
 */
#ifndef AEPO_EXAMPLE_OPTIM_H
#define AEPO_EXAMPLE_OPTIM_H

#include <stdint.h>

typedef struct adam {
    int64_t n;       /* parameters */
    float *m, *v;    /* first and second moments [n] */
    double lr, b1, b2, eps;
    int64_t t;       /* steps taken */
} adam;

/* Allocates the moments for n parameters (zeroed); returns 0, or -1 when out of memory. */
int adam_init(adam *opt, int64_t n, double lr);

/* One update of params [n] from grads [n]. */
void adam_step(adam *opt, float *params, const float *grads);

/* Releases the moments; safe on a zeroed or already freed struct. */
void adam_free(adam *opt);

#endif
