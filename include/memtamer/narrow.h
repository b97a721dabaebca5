/* narrow: float64 -> float32 at memory speed.  The scan that measures what
 * rounding to a smaller float type costs, and the in-place conversion of a
 * dense run of doubles to floats.  Nothing here touches a Python object:
 * the caller keeps the GIL throughout, so other Python threads wait for the
 * whole scan or conversion and never see an array half converted. */
#ifndef MEMTAMER_NARROW_H
#define MEMTAMER_NARROW_H

#include <stddef.h>

/* What rounding does to the values seen so far: the largest relative error
 * of a finite nonzero value, and how many finite values would become inf.
 * NaN, infinities and zeros round to themselves and count for nothing. */
typedef struct {
    double max_err;
    long long overflow;
} mt_narrow_rounding;

/* Strided scans for any alignment (elements are read through memcpy). */
void mt_narrow_rounding_f64_f32(const char *p, ptrdiff_t stride, ptrdiff_t n,
                                mt_narrow_rounding *r);
void mt_narrow_rounding_f64_f16(const char *p, ptrdiff_t stride, ptrdiff_t n,
                                mt_narrow_rounding *r);
void mt_narrow_rounding_f32_f16(const char *p, ptrdiff_t stride, ptrdiff_t n,
                                mt_narrow_rounding *r);

/* The same figures as mt_narrow_rounding_f64_f32 for n dense, aligned
 * doubles, vectorised and shared among a few threads. */
void mt_narrow_scan_f64_f32(const double *values, size_t n, mt_narrow_rounding *r);

/* Rewrites the n dense, aligned doubles at data as n floats at data's
 * start, front to back, on a few threads.  Cannot fail. */
void mt_narrow_f64_to_f32_in_place(char *data, size_t n);

#endif
