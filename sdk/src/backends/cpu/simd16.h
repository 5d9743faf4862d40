/* Sixteen-float vectors in GCC/Clang vector extensions, for the row
 * kernels (softmax, group norm) whose reductions the compiler will not
 * vectorise at -O2: max and float sums stay scalar without -ffast-math.
 * Built for the baseline ISA, a vf16 becomes four SSE registers; a caller
 * marked DFI_CPU_CLONES (cpu.h) also gets AVX2 and AVX-512 versions, picked
 * at load time, so no -march flag is needed.
 *
 * Everything is static and always inlined, so no vector ever crosses a
 * function boundary (hence -Wpsabi, which warns about that ABI, is off). */
#ifndef DIFFUSE_CPU_SIMD16_H
#define DIFFUSE_CPU_SIMD16_H

#include <stdint.h>
#include <string.h>
#include "cpu.h"

#pragma GCC diagnostic ignored "-Wpsabi"

typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));

DFI_INLINE vf16 vf16_load(const float *p)
{
	vf16 v;
	memcpy(&v, p, sizeof v);
	return v;
}

DFI_INLINE void vf16_store(float *p, vf16 v)
{
	memcpy(p, &v, sizeof v);
}

DFI_INLINE vf16 vf16_splat(float s)
{
	return (vf16){ s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s };
}

DFI_INLINE vf16 vf16_select(vi16 mask, vf16 a, vf16 b)
{
	return (vf16)(((vi16)a & mask) | ((vi16)b & ~mask));
}

DFI_INLINE vf16 vf16_max(vf16 a, vf16 b)
{
	return vf16_select(a > b, a, b);
}

/* Lanes [0, n) all ones, the rest zero. */
DFI_INLINE vi16 vi16_first(int64_t n)
{
	const vi16 lane = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
	const int32_t m = (int32_t)n;
	return lane < (vi16){ m, m, m, m, m, m, m, m, m, m, m, m, m, m, m, m };
}

/* In a fixed order, so a row's result never depends on anything but it. */
DFI_INLINE float vf16_sum(vf16 v)
{
	float s = 0.0f;
	for (int i = 0; i < 16; i++)
		s += v[i];
	return s;
}

DFI_INLINE float vf16_hmax(vf16 v)
{
	float m = v[0];
	for (int i = 1; i < 16; i++)
		m = m > v[i] ? m : v[i];
	return m;
}

/* dfi_expf (vmath.h) on 16 lanes, with a NaN kept and 0 below -87:
 * e^x to about 1 ulp on [-87, 88], 0 below (where e^x is under the
 * smallest normal float), +inf clamped to e^88: x = n ln2 + r with
 * |r| <= ln2 / 2, a degree-6 polynomial for e^r (Cephes' expf
 * coefficients), and 2^n built in the exponent bits. */
DFI_INLINE vf16 vf16_exp(vf16 x)
{
	/* Clamped so that a NaN passes through. */
	const vi16 underflow = x < -87.0f;
	x = vf16_select(underflow, vf16_splat(-87.0f), x);
	x = vf16_select(x > 88.0f, vf16_splat(88.0f), x);
	const vf16 round_magic = vf16_splat(12582912.0f); /* 1.5 * 2^23 */
	const vf16 n = (x * 1.44269504088896341f + round_magic) - round_magic;
	vf16 r = x - n * 0.693145751953125f;
	r = r - n * 1.42860682030941723212e-6f;
	vf16 p = vf16_splat(1.9875691500e-4f);
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r * r + r + 1.0f;
	const vi16 bits = (__builtin_convertvector(n, vi16) + 127) << 23;
	return vf16_select(underflow, vf16_splat(0.0f), p * (vf16)bits);
}

/* Loads n < 16 floats, the rest filled with `fill`. */
DFI_INLINE vf16 vf16_load_partial(const float *p, int64_t n, float fill)
{
	vf16 v = vf16_splat(fill);
	for (int64_t i = 0; i < n; i++)
		v[i] = p[i];
	return v;
}

DFI_INLINE void vf16_store_partial(float *p, vf16 v, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		p[i] = v[i];
}

#endif
