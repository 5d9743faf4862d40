/* Branch-free float functions the compiler can vectorise (libm's expf,
 * tanhf and erff are scalar calls that keep loops from vectorising). For
 * the CPU backend's pointwise kernels; accuracy about 2 ulp for exp, 1e-7
 * absolute for tanh and erf over the float range. */
#ifndef DIFFUSE_CPU_VMATH_H
#define DIFFUSE_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define DFI_VMATH static inline __attribute__((always_inline))
#else
#define DFI_VMATH static inline
#endif

/* e^x: x = n ln2 + r, |r| <= ln2 / 2, e^r by a degree-6 polynomial, 2^n
 * written into the exponent bits. Inputs are clamped to the finite range. */
DFI_VMATH float dfi_expf(float x)
{
	x = x < -87.3f ? -87.3f : x;
	x = x > 88.3f ? 88.3f : x; /* 2^n must stay finite */
	const float round_magic = 12582912.0f; /* 1.5 * 2^23: rounds to nearest */
	float n = (x * 1.44269504088896341f + round_magic) - round_magic;
	float r = x - n * 0.693145751953125f;  /* ln2, high part */
	r = r - n * 1.428606765330187e-06f;    /* ln2, low part */
	float p = 1.0f / 720.0f;
	p = p * r + 1.0f / 120.0f;
	p = p * r + 1.0f / 24.0f;
	p = p * r + 1.0f / 6.0f;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	int32_t bits = ((int32_t)n + 127) << 23;
	float scale;
	memcpy(&scale, &bits, sizeof scale);
	return p * scale;
}

DFI_VMATH float dfi_tanhf(float x)
{
	/* 1 - 2 / (e^2x + 1); near 0 use x - x^3/3 + 2x^5/15 for relative accuracy */
	float e = dfi_expf(2.0f * x);
	float t = 1.0f - 2.0f / (e + 1.0f);
	float x2 = x * x;
	float small = x * (1.0f - x2 * (1.0f / 3.0f - x2 * (2.0f / 15.0f)));
	return x2 < 1e-3f ? small : t;
}

DFI_VMATH float dfi_sigmoidf(float x)
{
	return 1.0f / (1.0f + dfi_expf(-x));
}

/* erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7). */
DFI_VMATH float dfi_erff(float x)
{
	float ax = x < 0.0f ? -x : x;
	float t = 1.0f / (1.0f + 0.3275911f * ax);
	float p = 1.061405429f;
	p = p * t - 1.453152027f;
	p = p * t + 1.421413741f;
	p = p * t - 0.284496736f;
	p = p * t + 0.254829592f;
	float y = 1.0f - p * t * dfi_expf(-ax * ax);
	return x < 0.0f ? -y : y;
}

#endif
