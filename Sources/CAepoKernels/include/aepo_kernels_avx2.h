/* AVX2 + FMA versions of the hot SIMD8 loops in Sources/AepoCore/Kernels/SoftmaxKernels.swift.
 *
 * Internal to libaepo (hidden symbols, not part of include/aepo.h). Swift cannot compile one
 * function for a wider instruction set than the rest of the library, so these few loops are
 * written with AVX2/FMA intrinsics under a per-function target attribute and chosen at run
 * time when the CPU has AVX2 and FMA and the OS saves YMM state; the library itself stays
 * baseline x86-64.
 *
 * Each function follows its Swift twin lane for lane (same blocks, accumulators, summation
 * order, exp reduction and polynomial), with fused multiply-adds where the Swift code has a
 * multiply and an add. Results therefore agree with the SIMD8 path to a few float32 ulps, not
 * bit for bit; on one machine they are bit-identical for every thread count. */
#ifndef AEPO_KERNELS_AVX2_H
#define AEPO_KERNELS_AVX2_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AEPOK_HIDDEN __attribute__((visibility("hidden")))

/* 1 when the CPU has AVX2 and FMA and the OS saves the YMM registers, else 0. */
AEPOK_HIDDEN int aepok_cpu_has_avx2(void);

/* Largest of x[0..<n], NaN ignored, -inf when empty. SoftmaxKernels.max */
AEPOK_HIDDEN float aepok_avx2_max(const float *x, ptrdiff_t n);

/* S = sum e^d and Q = sum e^d * d, d = max((x - shift) * inv_t, -88). SoftmaxKernels.expSums */
AEPOK_HIDDEN void aepok_avx2_exp_sums(const float *x, ptrdiff_t n, float shift, float inv_t,
                                      float *sum, float *sum_d);

/* sum e^max(x - shift, -88) (the T = 1 sum). SoftmaxKernels.expSum */
AEPOK_HIDDEN float aepok_avx2_exp_sum(const float *x, ptrdiff_t n, float shift);

/* out_j = p_j (-inv_t) (a + b u_j), u_j = max((x_j - shift) * inv_t + c, -88), p_j = e^u_j;
 * returns sum_j out_j. out may equal x. SoftmaxKernels.backward */
AEPOK_HIDDEN float aepok_avx2_backward(const float *x, float *out, ptrdiff_t n, float shift, float c,
                                       float inv_t, float a, float b);

/* The entries equal to shift (e^0 = 1) left out of the sums and counted instead; returns the
 * count. SoftmaxKernels.expSumsCountingMax / expSumCountingMax */
AEPOK_HIDDEN ptrdiff_t aepok_avx2_exp_sums_counting(const float *x, ptrdiff_t n, float shift, float inv_t,
                                                    float *sum, float *sum_d);
AEPOK_HIDDEN ptrdiff_t aepok_avx2_exp_sum_counting(const float *x, ptrdiff_t n, float shift, float *sum);

/* backward whose sum (*sum) leaves out the entries equal to top; returns their count.
 * SoftmaxKernels.backwardExcludingTop */
AEPOK_HIDDEN ptrdiff_t aepok_avx2_backward_excluding_top(const float *x, float *out, ptrdiff_t n, float top,
                                                         float shift, float c, float inv_t, float a, float b,
                                                         float *sum);

/* Index of the first entry of x[0..<n] equal to v, or -1. SoftmaxKernels.firstIndex */
AEPOK_HIDDEN ptrdiff_t aepok_avx2_first_index(const float *x, ptrdiff_t n, float v);

#ifdef __cplusplus
}
#endif

#endif
