/* AVX-512 versions of the loops in aepo_kernels_avx2.h, one function for each.
 *
 * Internal to libaepo (hidden symbols, not part of include/aepo.h). As with the AVX2 twins,
 * the instruction set is a per-function target attribute, so the library stays baseline
 * x86-64 and this path is chosen at run time only where aepok_cpu_has_avx512() says so.
 *
 * Each function is its AVX2 twin with one __m512 in place of one __m256: the same exp
 * reduction and polynomial, clamping, NaN and -inf handling and first-index rule, and the
 * same accumulators and blocks at twice the width (tails are masked loads filled with the
 * value the AVX2 code pads with). Elementwise results (the backward outputs) equal the AVX2
 * ones bit for bit; the sums are added in another order and so agree with the SIMD8 and
 * AVX2 paths to a few float32 ulps. On one machine they are bit-identical for every thread
 * count. */
#ifndef AEPO_KERNELS_AVX512_H
#define AEPO_KERNELS_AVX512_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef AEPOK_HIDDEN
#define AEPOK_HIDDEN __attribute__((visibility("hidden")))
#endif

/* 1 when aepok_cpu_has_avx2() holds, the CPU has AVX-512 F, DQ, CD, BW and VL, and the OS
 * saves the opmask and full ZMM state (XCR0 bits 1, 2, 5, 6 and 7), else 0. */
AEPOK_HIDDEN int aepok_cpu_has_avx512(void);

/* The same contracts as the aepok_avx2_* functions of the same name. */
AEPOK_HIDDEN float aepok_avx512_max(const float *x, ptrdiff_t n);
AEPOK_HIDDEN void aepok_avx512_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t,
                                        float *sum, float *sum_d);
AEPOK_HIDDEN float aepok_avx512_exp_sum(const float *x, ptrdiff_t n, float shift);
AEPOK_HIDDEN float aepok_avx512_backward(const float *x, float *out, ptrdiff_t n, float shift, float c,
                                         float inv_t, float a, float b);
AEPOK_HIDDEN ptrdiff_t aepok_avx512_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t,
                                                      float *sum, float *sum_d);
AEPOK_HIDDEN ptrdiff_t aepok_avx512_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum);
AEPOK_HIDDEN ptrdiff_t aepok_avx512_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top,
                                                           float shift, float c, float inv_t, float a, float b,
                                                           float *sum);
AEPOK_HIDDEN ptrdiff_t aepok_avx512_first_index(const float *x, ptrdiff_t n, float v);

#ifdef __cplusplus
}
#endif

#endif
