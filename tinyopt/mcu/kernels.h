/* tinyopt's int8 kernels for generated models: plain C99, no heap, no C library.
 *
 * The arithmetic is TFLite's integer arithmetic as TensorFlow Lite Micro's reference kernels compute it
 * (MultiplyByQuantizedMultiplier with two roundings, gemmlowp's fixed-point softmax), so that outputs are
 * bit-exact with TFLM. The generator folds each layer's input offset into its bias (bias - zp * sum(w))
 * and pads convolutions with the input zero point, so the inner loops multiply raw int8 values; on cores
 * with the DSP extension (Cortex-M4/M7/M55) the dot products use SXTB16 + SMLAD, two MACs per instruction.
 */
#ifndef TINYOPT_KERNELS_H
#define TINYOPT_KERNELS_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP) && !defined(TINYOPT_PORTABLE)
#include <arm_acle.h>
#define TINYOPT_DSP 1
/* SXTB16 of the word rotated by 8: bytes 1 and 3 as two int16 (one instruction; GCC 12 has no __ror). */
static inline __attribute__((always_inline)) uint32_t to_sxtb16_ror8(uint32_t x) {
  uint32_t r;
  __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
  return r;
}
#endif

/* Cortex-M55 and other cores with Helium (MVE): 128-bit vectors, 16 int8 or 4 int32 lanes per instruction. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(TINYOPT_PORTABLE)
#include <arm_mve.h>
#define TINYOPT_MVE 1
#endif

#define TO_INLINE static inline __attribute__((always_inline))

TO_INLINE uint32_t to_load32(const void *p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4); /* one LDR on cores that allow unaligned loads */
  return v;
}

/* gemmlowp's SaturatingRoundingDoublingHighMul. */
TO_INLINE int32_t to_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  int64_t ab = (int64_t)a * (int64_t)b;
  int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp's RoundingDivideByPOT: round half away from zero. */
TO_INLINE int32_t to_rdbpot(int32_t x, int exponent) {
  int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
  int32_t remainder = x & mask;
  int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLM's MultiplyByQuantizedMultiplier (double rounding). */
TO_INLINE int32_t to_mbqm(int32_t x, int32_t multiplier, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  return to_rdbpot(to_srdhm((int32_t)((uint32_t)x << left), multiplier), right);
}

/* What the generator knows of a layer's requantization (the `flags` of to_requant_s and the kernels using it). */
#define TO_ANY_LEFT 1 /* some multiplier is >= 1 (a left shift); without it `shift` holds right shifts (>= 0) */
#define TO_SMALL_ACC 2 /* every accumulator is below 2^30 in magnitude (bias + 128 * 127 * taps) */

/* Requantize an accumulator to int8: TFLM's MBQM, in fewer instructions. Multipliers are positive, so
 * SRDHM's one saturating case (both operands INT32_MIN) cannot occur, and its truncating division of
 * ab + nudge by 2^31 equals an arithmetic shift of ab + 2^30 for either sign; for |a| < 2^30 that is
 * SMMULR(2a, b) = (2ab + 2^31) >> 32, one instruction. When the activation floor is at or above the output zero
 * point (a fused ReLU), a non-positive accumulator can only give the floor: MBQM is monotonic and MBQM(0) = 0; a
 * positive one then gives a non-negative MBQM (no negative rounding, and no floor when it is the zero point). */
TO_INLINE int32_t to_requant_s(int32_t acc, int32_t multiplier, int shift, int flags, int32_t out_zp,
                               int32_t act_min, int32_t act_max) { /* in [-128, 127]: no sign extension to store */
  int relu = act_min >= out_zp;
  int any_left = flags & TO_ANY_LEFT;
  /* a ReLU's non-positive accumulators (about half) take the early exit: cheaper than any arithmetic */
  if (relu && acc <= 0) return act_min;
  int32_t x, v, floored = relu && act_min == out_zp; /* floored: v is known to be >= act_min */
#ifdef TINYOPT_DSP
  if ((flags & TO_SMALL_ACC) && !any_left) {
    /* Branch-free: |x| < 2^30, so no sum below can wrap. RoundingDivideByPOT(x, e) is
     * (x + ((2^e + (x >> 31)) >> 1)) >> e with arithmetic shifts (half, or half - 1 for negative x when e > 0). */
    __asm__("smmulr %0, %1, %2" : "=r"(x) : "r"(acc * 2), "r"(multiplier));
    int32_t one = 1 << shift;
    v = ((x + ((relu ? one : one + (x >> 31)) >> 1)) >> shift) + out_zp;
  } else
#endif
  {
    int left = any_left && shift > 0 ? shift : 0, right = !any_left ? shift : shift > 0 ? 0 : -shift;
    x = (int32_t)(((int64_t)(int32_t)((uint32_t)acc << left) * multiplier + ((int64_t)1 << 30)) >> 31);
    /* For x >= 0, RoundingDivideByPOT is (x + half) >> right, and x + half cannot wrap in 32 unsigned bits. */
    v = (relu || x >= 0 ? (int32_t)(((uint32_t)x + ((1u << right) >> 1)) >> right) : to_rdbpot(x, right)) + out_zp;
  }
#ifdef __ARM_FEATURE_SAT
  if (act_max == 127 && (act_min == -128 || floored)) return __ssat(v, 8);
#endif
  if (!floored) v = v < act_min ? act_min : v;
  return v > act_max ? act_max : v;
}

TO_INLINE int8_t to_requant(int32_t acc, int32_t multiplier, int shift, int32_t out_zp, int32_t act_min,
                            int32_t act_max) {
  return (int8_t)to_requant_s(acc, multiplier, shift, TO_ANY_LEFT, out_zp, act_min, act_max);
}

#ifdef TINYOPT_MVE
/* TFLM's MBQM on four lanes; shift: TFLM's (left when positive) with any_left, else minus the right shift. VQRDMULH is SRDHM exactly: (2ab + 2^31) >> 32
 * equals gemmlowp's nudge-and-truncate for either sign, and saturates the same single case. VRSHL by -e rounds half
 * up; RoundingDivideByPOT rounds half away from zero, so negative lanes first lose 1 when e > 0 (as CMSIS-NN's
 * arm_requantize_mve): (x - 1 + 2^(e-1)) >> e. */
TO_INLINE int32x4_t to_mbqm_x4(int32x4_t acc, int32x4_t mult, int32x4_t shift, int any_left) {
  int32x4_t zero = vdupq_n_s32(0), neg_right = any_left ? vminq_s32(shift, zero) : shift; /* else shift <= 0 */
  if (any_left) acc = vshlq_s32(acc, vmaxq_s32(shift, zero));
  int32x4_t x = vqrdmulhq_s32(acc, mult);
  x = vqaddq_s32(x, vshrq_n_s32(vandq_s32(x, neg_right), 31)); /* -1 where x < 0 and e > 0 */
  return vrshlq_s32(x, neg_right);
}

/* to_mbqm_x4 below a fused ReLU (a floor at or above the output zero point): a negative x gives at most 0 and the
 * floor either way, so it needs no rounding fix-up. */
TO_INLINE int32x4_t to_mbqm_x4_relu(int32x4_t acc, int32x4_t mult, int32x4_t shift, int any_left) {
  int32x4_t zero = vdupq_n_s32(0), neg_right = any_left ? vminq_s32(shift, zero) : shift;
  if (any_left) acc = vshlq_s32(acc, vmaxq_s32(shift, zero));
  return vrshlq_s32(vqrdmulhq_s32(acc, mult), neg_right);
}

/* to_mbqm_x4 with one multiplier and shift for every lane (ADD's): the sign fix-up is a plain x >> 31. */
TO_INLINE int32x4_t to_mbqm_x4s(int32x4_t acc, int32_t mult, int shift) {
  if (shift > 0) acc = vshlq_r_s32(acc, shift);
  int32x4_t x = vqrdmulhq_n_s32(acc, mult);
  if (shift < 0) x = vrshlq_n_s32(vqaddq_s32(x, vshrq_n_s32(x, 31)), shift);
  return x;
}

/* to_requant_s on four channels' accumulators: mult and shift point at their constants (the shifts stored as right
 * shifts without TO_ANY_LEFT); lanes from n on are neither read nor stored. */
/* shift: TFLM's with any_left, else minus the right shift. */
TO_INLINE void to_requant_store_v(int32x4_t acc, int32x4_t mult, int32x4_t shift, int any_left, int32_t out_zp,
                                  int32_t act_min, int32_t act_max, int8_t *o, int n) {
  int32x4_t v = act_min >= out_zp ? to_mbqm_x4_relu(acc, mult, shift, any_left) : to_mbqm_x4(acc, mult, shift, any_left);
  v = vaddq_n_s32(v, out_zp);
  v = vminq_s32(vmaxq_s32(v, vdupq_n_s32(act_min)), vdupq_n_s32(act_max));
  if (n >= 4) vstrbq_s32(o, v);
  else vstrbq_p_s32(o, v, vctp32q(n));
}

TO_INLINE void to_requant_store_x4(int32x4_t acc, const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                                   int32_t act_min, int32_t act_max, int8_t *o, int n) {
  int32x4_t sh, m;
  if (n >= 4) {
    sh = vldrbq_s32(shift), m = vldrwq_s32(mult);
  } else {
    mve_pred16_t p = vctp32q(n);
    sh = vldrbq_z_s32(shift, p), m = vldrwq_z_s32(mult, p);
  }
  if (!(flags & TO_ANY_LEFT)) sh = vnegq_s32(sh);
  to_requant_store_v(acc, m, sh, flags & TO_ANY_LEFT, out_zp, act_min, act_max, o, n);
}

/* to_requant_store_x4 for the channels at o, o + 4, o + 8, o + 12 (n from o on exist); mult and shift hold their
 * constants contiguously (emit_conv.mve_lanes). */
TO_INLINE void to_requant_scatter_x4(int32x4_t acc, const int32_t *mult, const int8_t *shift, int flags,
                                     int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *o, int n) {
  int32x4_t sh = vldrbq_s32(shift), m = vldrwq_s32(mult);
  if (!(flags & TO_ANY_LEFT)) sh = vnegq_s32(sh);
  int any_left = flags & TO_ANY_LEFT;
  int32x4_t v = act_min >= out_zp ? to_mbqm_x4_relu(acc, m, sh, any_left) : to_mbqm_x4(acc, m, sh, any_left);
  v = vminq_s32(vmaxq_s32(vaddq_n_s32(v, out_zp), vdupq_n_s32(act_min)), vdupq_n_s32(act_max));
  const uint32x4_t offsets = vmulq_n_u32(vidupq_n_u32(0, 1), 4);
  if (n >= 16)
    vstrbq_scatter_offset_s32(o, offsets, v);
  else
    vstrbq_scatter_offset_p_s32(o, offsets, v, vcmpgtq_s32(vdupq_n_s32(n), vreinterpretq_s32_u32(offsets)));
}

/* The empty asm pins each sum in a register as it is made: otherwise GCC's scheduler makes every product first and
 * spills them (eight Q registers). */
TO_INLINE int32x4_t to_vmla(int32x4_t a, int32x4_t x, int32x4_t w) {
  a = vaddq_s32(a, vmulq_s32(x, w));
  __asm__ volatile("" : "+w"(a));
  return a;
}

/* Four rows' dot products with x over kp inputs, as a vector. Under TINYOPT_MVE the generator stores weights in
 * groups of four rows and sixteen inputs (emitter.matrix_weights: [rows / 4][kp16 / 16][4][16], zero padded); w is
 * a group's start. VMLADAVA sums sixteen int8 products into a scalar; only x's last load is predicated. */
TO_INLINE int32x4_t to_dot4_mve(const int8_t *x, const int8_t *w, int kp) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int j = 0; j < kp >> 4; j++, x += 16, w += 64) {
    int8x16_t xv = vldrbq_s8(x);
    a0 = vmladavaq_s8(a0, xv, vldrbq_s8(w));
    a1 = vmladavaq_s8(a1, xv, vldrbq_s8(w + 16));
    a2 = vmladavaq_s8(a2, xv, vldrbq_s8(w + 32));
    a3 = vmladavaq_s8(a3, xv, vldrbq_s8(w + 48));
  }
  if (kp & 15) {
    int8x16_t xv = vldrbq_z_s8(x, vctp8q(kp & 15));
    a0 = vmladavaq_s8(a0, xv, vldrbq_s8(w));
    a1 = vmladavaq_s8(a1, xv, vldrbq_s8(w + 16));
    a2 = vmladavaq_s8(a2, xv, vldrbq_s8(w + 32));
    a3 = vmladavaq_s8(a3, xv, vldrbq_s8(w + 48));
  }
  int32x4_t v = vdupq_n_s32(a0);
  v = vsetq_lane_s32(a1, v, 1), v = vsetq_lane_s32(a2, v, 2);
  return vsetq_lane_s32(a3, v, 3);
}

/* to_dot4_mve for two pixels (x and y) at once: each weight vector feeds two VMLADAVs. Eight accumulators: VMLADAV
 * takes even registers only, r0 to r14. */
TO_INLINE void to_dot4x2_mve(const int8_t *x, const int8_t *y, const int8_t *w, int kp, int32x4_t *vx,
                             int32x4_t *vy) {
  int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
  for (int j = 0; j < kp >> 4; j++, x += 16, y += 16, w += 64) {
    int8x16_t xv = vldrbq_s8(x), yv = vldrbq_s8(y), wv = vldrbq_s8(w);
    a0 = vmladavaq_s8(a0, xv, wv), b0 = vmladavaq_s8(b0, yv, wv);
    wv = vldrbq_s8(w + 16);
    a1 = vmladavaq_s8(a1, xv, wv), b1 = vmladavaq_s8(b1, yv, wv);
    wv = vldrbq_s8(w + 32);
    a2 = vmladavaq_s8(a2, xv, wv), b2 = vmladavaq_s8(b2, yv, wv);
    wv = vldrbq_s8(w + 48);
    a3 = vmladavaq_s8(a3, xv, wv), b3 = vmladavaq_s8(b3, yv, wv);
  }
  if (kp & 15) {
    mve_pred16_t p = vctp8q(kp & 15);
    int8x16_t xv = vldrbq_z_s8(x, p), yv = vldrbq_z_s8(y, p), wv = vldrbq_s8(w);
    a0 = vmladavaq_s8(a0, xv, wv), b0 = vmladavaq_s8(b0, yv, wv);
    wv = vldrbq_s8(w + 16);
    a1 = vmladavaq_s8(a1, xv, wv), b1 = vmladavaq_s8(b1, yv, wv);
    wv = vldrbq_s8(w + 32);
    a2 = vmladavaq_s8(a2, xv, wv), b2 = vmladavaq_s8(b2, yv, wv);
    wv = vldrbq_s8(w + 48);
    a3 = vmladavaq_s8(a3, xv, wv), b3 = vmladavaq_s8(b3, yv, wv);
  }
  int32x4_t v = vdupq_n_s32(a0);
  v = vsetq_lane_s32(a1, v, 1), v = vsetq_lane_s32(a2, v, 2), *vx = vsetq_lane_s32(a3, v, 3);
  v = vdupq_n_s32(b0);
  v = vsetq_lane_s32(b1, v, 1), v = vsetq_lane_s32(b2, v, 2), *vy = vsetq_lane_s32(b3, v, 3);
}

/* The bias of channels c.. (n of them) as a vector. */
TO_INLINE int32x4_t to_bias4(const int32_t *bias, int n) {
  return n >= 4 ? vldrwq_s32(bias) : vldrwq_z_s32(bias, vctp32q(n));
}

/* Every output channel of one pixel (kp inputs at x), four channels per pass. */
TO_INLINE void to_rows_mve(const int8_t *x, const int8_t *w, const int32_t *bias, int kp, int oc, const int32_t *mult,
                           const int8_t *shift, int flags, int32_t out_zp, int32_t act_min, int32_t act_max,
                           int8_t *o) {
  const int kp16 = (kp + 15) & ~15;
  for (int c = 0; c < oc; c += 4) {
    int n = oc - c < 4 ? oc - c : 4;
    to_requant_store_x4(vaddq_s32(to_dot4_mve(x, w + c * kp16, kp), to_bias4(bias + c, n)), mult + c, shift + c,
                        flags, out_zp, act_min, act_max, o + c, n);
  }
}
#endif

/* The same for multipliers below one (right shift only), as the generator emits them when every channel's
 * shift is <= 0: no shift selection at run time. */
TO_INLINE int8_t to_requant_right(int32_t acc, int32_t multiplier, int right, int32_t out_zp, int32_t act_min,
                                  int32_t act_max) {
  if (act_min >= out_zp && acc <= 0) return (int8_t)act_min;
  int32_t x = (int32_t)(((int64_t)acc * multiplier + ((int64_t)1 << 30)) >> 31);
  int32_t v = (x >= 0 ? (int32_t)(((uint32_t)x + ((1u << right) >> 1)) >> right) : to_rdbpot(x, right)) + out_zp;
  v = v < act_min ? act_min : v;
  v = v > act_max ? act_max : v;
  return (int8_t)v;
}

/* sum(a[i] * b[i]) over n int8 values, n a multiple of 4. */
TO_INLINE int32_t to_dot4(const int8_t *a, const int8_t *b, int n, int32_t acc) {
#ifdef TINYOPT_DSP
  for (int i = 0; i < n; i += 4) {
    uint32_t x = to_load32(a + i), y = to_load32(b + i);
    acc = __smlad(__sxtb16(x), __sxtb16(y), acc);
    acc = __smlad(to_sxtb16_ror8(x), to_sxtb16_ror8(y), acc);
  }
#else
  for (int i = 0; i < n; i++) acc += (int32_t)a[i] * b[i];
#endif
  return acc;
}

/* Two dot products that share the vector a (two output channels per pass over the input). */
TO_INLINE void to_dot4x2(const int8_t *a, const int8_t *b0, const int8_t *b1, int n, int32_t *acc0,
                         int32_t *acc1) {
#ifdef TINYOPT_DSP
  int32_t s0 = *acc0, s1 = *acc1;
  for (int i = 0; i < n; i += 4) {
    uint32_t x = to_load32(a + i), y0 = to_load32(b0 + i), y1 = to_load32(b1 + i);
    uint32_t xe = __sxtb16(x), xo = to_sxtb16_ror8(x);
    s0 = __smlad(xe, __sxtb16(y0), s0);
    s0 = __smlad(xo, to_sxtb16_ror8(y0), s0);
    s1 = __smlad(xe, __sxtb16(y1), s1);
    s1 = __smlad(xo, to_sxtb16_ror8(y1), s1);
  }
  *acc0 = s0;
  *acc1 = s1;
#else
  *acc0 = to_dot4(a, b0, n, *acc0);
  *acc1 = to_dot4(a, b1, n, *acc1);
#endif
}

/* Four dot products that share the vector a (dense layers: four rows per pass over the input). */
TO_INLINE void to_dot4x4(const int8_t *a, const int8_t *b, int n, int32_t *acc) {
#ifdef TINYOPT_DSP
  int32_t s0 = acc[0], s1 = acc[1], s2 = acc[2], s3 = acc[3];
  const int8_t *b1 = b + n, *b2 = b + 2 * n, *b3 = b + 3 * n;
#define TO_STEP_4X1(i)                                                     \
  do {                                                                     \
    uint32_t x = to_load32(a + (i)), xe = __sxtb16(x), xo = to_sxtb16_ror8(x); \
    uint32_t y = to_load32(b + (i));                                       \
    s0 = __smlad(xe, __sxtb16(y), s0);                                     \
    s0 = __smlad(xo, to_sxtb16_ror8(y), s0);                               \
    y = to_load32(b1 + (i));                                               \
    s1 = __smlad(xe, __sxtb16(y), s1);                                     \
    s1 = __smlad(xo, to_sxtb16_ror8(y), s1);                               \
    y = to_load32(b2 + (i));                                               \
    s2 = __smlad(xe, __sxtb16(y), s2);                                     \
    s2 = __smlad(xo, to_sxtb16_ror8(y), s2);                               \
    y = to_load32(b3 + (i));                                               \
    s3 = __smlad(xe, __sxtb16(y), s3);                                     \
    s3 = __smlad(xo, to_sxtb16_ror8(y), s3);                               \
  } while (0)
  int i = 0;
  for (; i + 8 <= n; i += 8) { /* eight inputs per pass, as to_dot4_2x2 */
    TO_STEP_4X1(i);
    __asm__ volatile("" ::: "memory");
    TO_STEP_4X1(i + 4);
  }
  if (i < n) TO_STEP_4X1(i);
#undef TO_STEP_4X1
  acc[0] = s0, acc[1] = s1, acc[2] = s2, acc[3] = s3;
#else
  for (int r = 0; r < 4; r++) acc[r] = to_dot4(a, b + r * n, n, acc[r]);
#endif
}

/* A pruned row's non-zero weights: each step's gap (in inputs) from the one before, and its value. Gaps are
 * one byte: a longer run of zeros takes filler steps of 255 with value 0. Two bytes per kept weight. */
TO_INLINE int32_t to_dot_sparse(const int8_t *a, const uint8_t *gap, const int8_t *val, int n, int32_t acc) {
  for (int i = 0; i < n; i++) {
    a += gap[i];
    acc += (int32_t)*a * val[i];
  }
  return acc;
}

/* Dense layers: out[o] = requant(bias[o] + sum_k in[k] * w[o][k]); rows padded to kp (a multiple of 4). */
TO_INLINE void to_fully_connected(const int8_t *in, const int8_t *w, const int32_t *bias, int kp, int outs,
                                  const int32_t *mult, const int8_t *shift, int per_channel, int32_t out_zp,
                                  int32_t act_min, int32_t act_max, int8_t *out) {
#ifdef TINYOPT_MVE
  const int kp16 = (kp + 15) & ~15;
  for (int o = 0; o < outs; o += 4) {
    int n = outs - o < 4 ? outs - o : 4;
    int32x4_t v = vaddq_s32(to_dot4_mve(in, w + o * kp16, kp), to_bias4(bias + o, n));
    if (per_channel)
      to_requant_store_x4(v, mult + o, shift + o, TO_ANY_LEFT, out_zp, act_min, act_max, out + o, n);
    else
      to_requant_store_v(v, vdupq_n_s32(mult[0]), vdupq_n_s32(shift[0]), 1, out_zp, act_min, act_max, out + o, n);
  }
  return;
#endif
  int o = 0;
  for (; o + 3 < outs; o += 4) {
    int32_t acc[4] = {bias[o], bias[o + 1], bias[o + 2], bias[o + 3]};
    to_dot4x4(in, w + o * kp, kp, acc);
    for (int r = 0; r < 4; r++) {
      int c = per_channel ? o + r : 0;
      out[o + r] = to_requant(acc[r], mult[c], shift[c], out_zp, act_min, act_max);
    }
  }
  for (; o + 1 < outs; o += 2) {
    int32_t a0 = bias[o], a1 = bias[o + 1];
    to_dot4x2(in, w + o * kp, w + (o + 1) * kp, kp, &a0, &a1);
    int c0 = per_channel ? o : 0, c1 = per_channel ? o + 1 : 0;
    out[o] = to_requant(a0, mult[c0], shift[c0], out_zp, act_min, act_max);
    out[o + 1] = to_requant(a1, mult[c1], shift[c1], out_zp, act_min, act_max);
  }
  for (; o < outs; o++) {
    int c = per_channel ? o : 0;
    out[o] = to_requant(to_dot4(in, w + o * kp, kp, bias[o]), mult[c], shift[c], out_zp, act_min, act_max);
  }
}

TO_INLINE void to_fully_connected_sparse(const int8_t *in, const uint16_t *row_start, const uint8_t *gap,
                                         const int8_t *val, const int32_t *bias, int outs, const int32_t *mult,
                                         const int8_t *shift, int per_channel, int32_t out_zp, int32_t act_min,
                                         int32_t act_max, int8_t *out) {
  for (int o = 0; o < outs; o++) {
    int c = per_channel ? o : 0, s = row_start[o];
    int32_t acc = to_dot_sparse(in, gap + s, val + s, row_start[o + 1] - s, bias[o]);
    out[o] = to_requant(acc, mult[c], shift[c], out_zp, act_min, act_max);
  }
}

/* Clustered dense layers: each weight is a 4-bit index into the layer's at most 16 values. Per group of four
 * inputs, one code byte holds the indices of weights 0 and 2, the next those of 1 and 3, and a 256-entry table
 * (generated per layer) turns a code byte into the two weights as int16 pairs, ready for SMLAD against
 * SXTB16's (x0, x2) and (x1, x3). Half the flash of int8 weights, plus a 1 KB table. */
TO_INLINE void to_fully_connected_clustered(const int8_t *in, const uint8_t *codes, const uint32_t *pairs,
                                            const int32_t *bias, int kp, int outs, const int32_t *mult,
                                            const int8_t *shift, int per_channel, int32_t out_zp, int32_t act_min,
                                            int32_t act_max, int8_t *out) {
  for (int o = 0; o < outs; o++) {
    const uint8_t *row = codes + o * (kp / 2);
    int32_t acc = bias[o];
    for (int i = 0; i < kp / 4; i++) {
      uint32_t even = pairs[row[2 * i]], odd = pairs[row[2 * i + 1]];
#ifdef TINYOPT_DSP
      uint32_t x = to_load32(in + 4 * i);
      acc = __smlad(__sxtb16(x), even, acc);
      acc = __smlad(to_sxtb16_ror8(x), odd, acc);
#else
      const int8_t *x = in + 4 * i;
      acc += x[0] * (int16_t)(even & 0xFFFFu) + x[2] * (int16_t)(even >> 16);
      acc += x[1] * (int16_t)(odd & 0xFFFFu) + x[3] * (int16_t)(odd >> 16);
#endif
    }
    int c = per_channel ? o : 0;
    out[o] = to_requant(acc, mult[c], shift[c], out_zp, act_min, act_max);
  }
}

/* Convolution geometry (NHWC, batch 1). */
typedef struct {
  int ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, dh, dw, ph, pw;
} to_geom;

/* n bytes, by words when n is a multiple of 4 (a pixel's channels in im2col). */
TO_INLINE void to_copy_bytes(const int8_t *src, int n, int8_t *dst) {
#ifdef TINYOPT_MVE
  for (int i = 0; i < n; i += 16) { /* sixteen bytes a load, the tail predicated */
    mve_pred16_t p = vctp8q(n - i);
    vstrbq_p_s8(dst + i, vldrbq_z_s8(src + i, p), p);
  }
  return;
#endif
  if ((n & 3) == 0)
    for (int i = 0; i < n; i += 4) {
      uint32_t v = to_load32(src + i);
      __builtin_memcpy(dst + i, &v, 4);
    }
  else
    for (int i = 0; i < n; i++) dst[i] = src[i];
}

/* n bytes of value v. */
TO_INLINE void to_fill_bytes(int8_t *dst, int n, int8_t v) {
#ifdef TINYOPT_MVE
  const int8x16_t vv = vdupq_n_s8(v);
  for (int i = 0; i < n; i += 16) vstrbq_p_s8(dst + i, vv, vctp8q(n - i));
#else
  for (int i = 0; i < n; i++) dst[i] = v;
#endif
}

/* Gather one output pixel's receptive field (kh * kw * ic values, padded with pad to kp). */
TO_INLINE void to_im2col(const int8_t *in, const to_geom *g, int oy, int ox, int8_t pad, int kp, int8_t *col) {
  int8_t *c = col;
  int y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw;
  if (y0 >= 0 && x0 >= 0 && y0 + (g->kh - 1) * g->dh < g->ih && x0 + (g->kw - 1) * g->dw < g->iw) {
    /* the whole window is inside the input: no bounds checks */
    for (int ky = 0; ky < g->kh; ky++) {
      const int8_t *row = in + ((y0 + ky * g->dh) * g->iw + x0) * g->ic;
      if (g->dw == 1) { /* the window's row is kw * ic contiguous bytes: one copy (words, not bytes, for ic = 1) */
        to_copy_bytes(row, g->kw * g->ic, c);
        c += g->kw * g->ic;
      } else {
        for (int kx = 0; kx < g->kw; kx++, row += g->dw * g->ic, c += g->ic) to_copy_bytes(row, g->ic, c);
      }
    }
  } else {
    for (int ky = 0; ky < g->kh; ky++) {
      int iy = y0 + ky * g->dh;
      for (int kx = 0; kx < g->kw; kx++) {
        int ix = x0 + kx * g->dw;
        if (iy >= 0 && iy < g->ih && ix >= 0 && ix < g->iw) {
          to_copy_bytes(in + (iy * g->iw + ix) * g->ic, g->ic, c);
          c += g->ic;
        } else {
          for (int i = 0; i < g->ic; i++) *c++ = pad;
        }
      }
    }
  }
  while (c < col + kp) *c++ = 0;
}

/* Two pixels' dot products with two weight rows at once (x1 = x0 + dx, w1 = w0 + kp): each loaded word of input or
 * weights feeds two SMLADs, against one in to_dot4x2. s: pixel 0 channels 0 and 1, then pixel 1's. */
TO_INLINE void to_dot4_2x2(const int8_t *x, int dx, const int8_t *w, int kp, int32_t *s) {
#ifdef TINYOPT_DSP
  int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
#define TO_STEP_2X2(i)                                                                            \
  do {                                                                                            \
    uint32_t a = to_load32(x + (i)), b = to_load32(x + dx + (i));                                 \
    uint32_t ae = __sxtb16(a), ao = to_sxtb16_ror8(a), be = __sxtb16(b), bo = to_sxtb16_ror8(b); \
    uint32_t u = to_load32(w + (i)), ue = __sxtb16(u), uo = to_sxtb16_ror8(u);                   \
    s00 = __smlad(ae, ue, s00);                                                                   \
    s00 = __smlad(ao, uo, s00);                                                                   \
    s10 = __smlad(be, ue, s10);                                                                   \
    s10 = __smlad(bo, uo, s10);                                                                   \
    u = to_load32(w + kp + (i)), ue = __sxtb16(u), uo = to_sxtb16_ror8(u);                       \
    s01 = __smlad(ae, ue, s01);                                                                   \
    s01 = __smlad(ao, uo, s01);                                                                   \
    s11 = __smlad(be, ue, s11);                                                                   \
    s11 = __smlad(bo, uo, s11);                                                                   \
  } while (0)
  /* eight inputs per pass: the pointer steps and the loop test are paid half as often */
  const int8_t *end = x + (kp & ~7);
  for (; x < end; x += 8, w += 8) {
    TO_STEP_2X2(0);
    __asm__ volatile("" ::: "memory"); /* keeps GCC from hoisting the second step's loads (register spills) */
    TO_STEP_2X2(4);
  }
  if (kp & 4) TO_STEP_2X2(0);
#undef TO_STEP_2X2
  s[0] = s00, s[1] = s01, s[2] = s10, s[3] = s11;
#else
  for (int i = 0; i < kp; i++) {
    s[0] += x[i] * w[i], s[1] += x[i] * w[kp + i];
    s[2] += x[dx + i] * w[i], s[3] += x[dx + i] * w[kp + i];
  }
#endif
}

/* A 2x2 block's sums (s: pixel 0's channels c and c + 1, then pixel 1's) requantized and stored; every result before
 * any store: int8 stores may alias the int8 shifts, which would be loaded again. */
TO_INLINE void to_store2x2(const int32_t *s, int c, const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                           int32_t act_min, int32_t act_max, int8_t *o0, int8_t *o1) {
  int32_t m0 = mult[c], m1 = mult[c + 1], sh0 = shift[c], sh1 = shift[c + 1];
  int32_t r00 = to_requant_s(s[0], m0, sh0, flags, out_zp, act_min, act_max);
  int32_t r10 = to_requant_s(s[2], m0, sh0, flags, out_zp, act_min, act_max);
  int32_t r01 = to_requant_s(s[1], m1, sh1, flags, out_zp, act_min, act_max);
  int32_t r11 = to_requant_s(s[3], m1, sh1, flags, out_zp, act_min, act_max);
  o0[c] = (int8_t)r00, o1[c] = (int8_t)r10, o0[c + 1] = (int8_t)r01, o1[c + 1] = (int8_t)r11;
}

/* The last channel c of an odd count, for two pixels. */
TO_INLINE void to_last_channel2(const int8_t *x0, const int8_t *x1, const int8_t *w, const int32_t *bias, int kp, int c,
                                const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp, int32_t act_min,
                                int32_t act_max, int8_t *o0, int8_t *o1) {
  o0[c] = to_requant_s(to_dot4(x0, w + c * kp, kp, bias[c]), mult[c], shift[c], flags, out_zp, act_min, act_max);
  o1[c] = to_requant_s(to_dot4(x1, w + c * kp, kp, bias[c]), mult[c], shift[c], flags, out_zp, act_min, act_max);
}

/* Every output channel of two pixels whose kp inputs are at x and x + dx; weights [oc][kp]. */
TO_INLINE void to_rows2(const int8_t *x, int dx, const int8_t *w, const int32_t *bias, int kp, int oc,
                        const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp, int32_t act_min,
                        int32_t act_max, int8_t *o0, int8_t *o1) {
#ifdef TINYOPT_MVE
  const int kp16 = (kp + 15) & ~15;
  for (int c = 0; c < oc; c += 4) {
    int n = oc - c < 4 ? oc - c : 4;
    int32x4_t v0, v1, b = to_bias4(bias + c, n);
    to_dot4x2_mve(x, x + dx, w + c * kp16, kp, &v0, &v1);
    to_requant_store_x4(vaddq_s32(v0, b), mult + c, shift + c, flags, out_zp, act_min, act_max, o0 + c, n);
    to_requant_store_x4(vaddq_s32(v1, b), mult + c, shift + c, flags, out_zp, act_min, act_max, o1 + c, n);
  }
#else
  int c = 0;
  for (; c + 1 < oc; c += 2) {
    int32_t s[4] = {bias[c], bias[c + 1], bias[c], bias[c + 1]};
    to_dot4_2x2(x, dx, w + c * kp, kp, s);
    to_store2x2(s, c, mult, shift, flags, out_zp, act_min, act_max, o0, o1);
  }
  if (c < oc) to_last_channel2(x, x + dx, w, bias, kp, c, mult, shift, flags, out_zp, act_min, act_max, o0, o1);
#endif
}

/* Every output channel of one pixel (the last of an odd count). */
TO_INLINE void to_rows1(const int8_t *x, const int8_t *w, const int32_t *bias, int kp, int oc, const int32_t *mult,
                        const int8_t *shift, int flags, int32_t out_zp, int32_t act_min, int32_t act_max,
                        int8_t *o) {
#ifdef TINYOPT_MVE
  to_rows_mve(x, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, o);
  return;
#endif
  int c = 0;
  for (; c + 1 < oc; c += 2) {
    int32_t a0 = bias[c], a1 = bias[c + 1];
    to_dot4x2(x, w + c * kp, w + (c + 1) * kp, kp, &a0, &a1);
    o[c] = to_requant_s(a0, mult[c], shift[c], flags, out_zp, act_min, act_max);
    o[c + 1] = to_requant_s(a1, mult[c + 1], shift[c + 1], flags, out_zp, act_min, act_max);
  }
  if (c < oc)
    o[c] = to_requant_s(to_dot4(x, w + c * kp, kp, bias[c]), mult[c], shift[c], flags, out_zp, act_min, act_max);
}

/* Widened inputs (to_rows2w) take 16 instructions for 16 MACs against 20, but GCC loads them with LDRD and LDM,
 * which the Cortex-M4 cannot pipeline like single loads: its estimated cycles rose 2-4% on DS-CNN and ResNet-8
 * (benchmarks/cycles) while its instructions fell 6-7%. So only dual-issue cores (the M7: 64-bit loads, an ALU
 * pipe beside the MAC) take them, by -DTINYOPT_DUAL_ISSUE. */
#if defined(TINYOPT_DSP) && !defined(TINYOPT_MVE) && defined(TINYOPT_DUAL_ISSUE)
#define TINYOPT_WIDEN 1
/* Two pixels' kp inputs widened once for every output channel (to_rows2w): per group of four int8 values, pixel 0's
 * SXTB16 halves (bytes 0 and 2, then 1 and 3: the pairs in which a weight word unpacks), then pixel 1's; 4 * kp
 * bytes, word aligned. */
TO_INLINE void to_widen2(const int8_t *x0, const int8_t *x1, int kp, uint32_t *xw) {
  for (int i = 0; i < kp; i += 4, xw += 4) {
    uint32_t a = to_load32(x0 + i), b = to_load32(x1 + i);
    xw[0] = __sxtb16(a), xw[1] = to_sxtb16_ror8(a), xw[2] = __sxtb16(b), xw[3] = to_sxtb16_ror8(b);
  }
}

/* to_dot4_2x2 on widened inputs: per four inputs, two weight words unpacked once and the two pixels' four input
 * words (two LDRDs): 16 instructions for 16 MACs, against 20 when every input word is unpacked per channel pair. */
TO_INLINE void to_dot4_2x2w(const uint32_t *xw, const int8_t *w, int kp, int32_t *s) {
  int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
#define TO_STEP_2X2W(i)                                                             \
  do {                                                                              \
    uint32_t u = to_load32(w + (i)), ue = __sxtb16(u), uo = to_sxtb16_ror8(u);      \
    uint32_t v = to_load32(w + kp + (i)), ve = __sxtb16(v), vo = to_sxtb16_ror8(v); \
    uint32_t e = xw[(i)], o = xw[(i) + 1];                                          \
    s00 = __smlad(e, ue, s00);                                                      \
    s00 = __smlad(o, uo, s00);                                                      \
    s01 = __smlad(e, ve, s01);                                                      \
    s01 = __smlad(o, vo, s01);                                                      \
    e = xw[(i) + 2], o = xw[(i) + 3];                                               \
    s10 = __smlad(e, ue, s10);                                                      \
    s10 = __smlad(o, uo, s10);                                                      \
    s11 = __smlad(e, ve, s11);                                                      \
    s11 = __smlad(o, vo, s11);                                                      \
  } while (0)
  const int8_t *end = w + (kp & ~7);
  for (; w < end; w += 8, xw += 8) {
    TO_STEP_2X2W(0);
    __asm__ volatile("" ::: "memory");
    TO_STEP_2X2W(4);
  }
  if (kp & 4) TO_STEP_2X2W(0);
#undef TO_STEP_2X2W
  s[0] = s00, s[1] = s01, s[2] = s10, s[3] = s11;
}

/* to_rows2 with the two pixels widened first into xw (4 * kp bytes of scratch). */
TO_INLINE void to_rows2w(const int8_t *x0, const int8_t *x1, uint32_t *xw, const int8_t *w, const int32_t *bias,
                         int kp, int oc, const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                         int32_t act_min, int32_t act_max, int8_t *o0, int8_t *o1) {
  to_widen2(x0, x1, kp, xw);
  int c = 0;
  for (; c + 1 < oc; c += 2) {
    int32_t s[4] = {bias[c], bias[c + 1], bias[c], bias[c + 1]};
    to_dot4_2x2w(xw, w + c * kp, kp, s);
    to_store2x2(s, c, mult, shift, flags, out_zp, act_min, act_max, o0, o1);
  }
  if (c < oc) to_last_channel2(x0, x1, w, bias, kp, c, mult, shift, flags, out_zp, act_min, act_max, o0, o1);
}
#endif

/* CONV_2D 1x1, stride 1, no padding: a matrix multiply straight from the NHWC input, two pixels by two output
 * channels per pass (no im2col copy). Rows of weights are padded with zeros to kp = round4(ic), so the up to 3
 * bytes read past a pixel's channels (the next pixel's, or the arena's slack after the last) count for nothing. */
TO_INLINE void to_pointwise(const int8_t *in, int pixels, int ic, const int8_t *w, const int32_t *bias, int kp,
                            int oc, const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                            int32_t act_min, int32_t act_max, uint32_t *xw, int8_t *out) {
#ifdef TINYOPT_MVE
  /* Groups of four channels outside, pixel pairs inside: the group's bias, multipliers and shifts stay in vectors. */
  const int kp16 = (kp + 15) & ~15, any_left = flags & TO_ANY_LEFT;
  for (int c = 0; c < oc; c += 4) {
    const int n = oc - c < 4 ? oc - c : 4;
    const mve_pred16_t pc = vctp32q(n);
    const int32x4_t b = vldrwq_z_s32(bias + c, pc), m = vldrwq_z_s32(mult + c, pc);
    int32x4_t sh = vldrbq_z_s32(shift + c, pc);
    if (!any_left) sh = vnegq_s32(sh);
    const int8_t *wc = w + c * kp16;
    int p = 0;
    for (; p + 1 < pixels; p += 2) {
      int32x4_t v0, v1;
      to_dot4x2_mve(in + p * ic, in + (p + 1) * ic, wc, kp, &v0, &v1);
      to_requant_store_v(vaddq_s32(v0, b), m, sh, any_left, out_zp, act_min, act_max, out + p * oc + c, n);
      to_requant_store_v(vaddq_s32(v1, b), m, sh, any_left, out_zp, act_min, act_max, out + (p + 1) * oc + c, n);
    }
    if (p < pixels)
      to_requant_store_v(vaddq_s32(to_dot4_mve(in + p * ic, wc, kp), b), m, sh, any_left, out_zp, act_min, act_max,
                         out + p * oc + c, n);
  }
  return;
#elif defined(TINYOPT_WIDEN)
  { /* Pixel pairs outside, widened once into xw (4 * kp bytes), every channel pair inside. */
    int p = 0;
    for (; p + 1 < pixels; p += 2)
      to_rows2w(in + p * ic, in + (p + 1) * ic, xw, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max,
                out + p * oc, out + (p + 1) * oc);
    if (p < pixels) to_rows1(in + p * ic, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, out + p * oc);
    return;
  }
#elif defined(TINYOPT_DSP)
  /* Channel pairs outside, pixel pairs inside: the pair's bias, multipliers and shifts stay in registers. */
  if ((oc & 1) == 0) {
    for (int c = 0; c < oc; c += 2) {
      const int8_t *wc = w + c * kp;
      const int32_t b0 = bias[c], b1 = bias[c + 1], m0 = mult[c], m1 = mult[c + 1];
      const int32_t sh0 = shift[c], sh1 = shift[c + 1];
      int p = 0;
      for (; p + 1 < pixels; p += 2) {
        int32_t s[4] = {b0, b1, b0, b1};
        to_dot4_2x2(in + p * ic, ic, wc, kp, s);
        int32_t r00 = to_requant_s(s[0], m0, sh0, flags, out_zp, act_min, act_max);
        int32_t r10 = to_requant_s(s[2], m0, sh0, flags, out_zp, act_min, act_max);
        int32_t r01 = to_requant_s(s[1], m1, sh1, flags, out_zp, act_min, act_max);
        int32_t r11 = to_requant_s(s[3], m1, sh1, flags, out_zp, act_min, act_max);
        int8_t *o = out + p * oc + c;
        o[0] = (int8_t)r00, o[1] = (int8_t)r01, o[oc] = (int8_t)r10, o[oc + 1] = (int8_t)r11;
      }
      if (p < pixels) {
        int32_t a0 = b0, a1 = b1;
        to_dot4x2(in + p * ic, wc, wc + kp, kp, &a0, &a1);
        out[p * oc + c] = (int8_t)to_requant_s(a0, m0, sh0, flags, out_zp, act_min, act_max);
        out[p * oc + c + 1] = (int8_t)to_requant_s(a1, m1, sh1, flags, out_zp, act_min, act_max);
      }
    }
    return;
  }
#endif
  int p = 0;
  for (; p + 1 < pixels; p += 2)
    to_rows2(in + p * ic, ic, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, out + p * oc,
             out + (p + 1) * oc);
  if (p < pixels) to_rows1(in + p * ic, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, out + p * oc);
}

/* CONV_2D 1x1 with strides (ResNet's shortcuts; 1x1 windows have no padding): to_pointwise's blocks over the input
 * pixels the strides pick, two of one output row per pass, no im2col. */
TO_INLINE void to_pointwise_strided(const int8_t *in, const to_geom *g, const int8_t *w, const int32_t *bias, int kp,
                                    const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                                    int32_t act_min, int32_t act_max, uint32_t *xw, int8_t *out) {
  const int ic = g->ic, oc = g->oc, dx = g->sw * ic;
  for (int oy = 0; oy < g->oh; oy++) {
    const int8_t *x = in + oy * g->sh * g->iw * ic;
    int8_t *o = out + oy * g->ow * oc;
    int ox = 0;
    for (; ox + 1 < g->ow; ox += 2, x += 2 * dx, o += 2 * oc) {
#ifdef TINYOPT_WIDEN
      to_rows2w(x, x + dx, xw, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, o, o + oc);
#else
      (void)xw;
      to_rows2(x, dx, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, o, o + oc);
#endif
    }
    if (ox < g->ow) to_rows1(x, w, bias, kp, oc, mult, shift, flags, out_zp, act_min, act_max, o);
  }
}

/* CONV_2D (and DEPTHWISE_CONV_2D with one input channel): im2col two pixels at a time into col (2 * kp bytes),
 * then to_rows2's two-by-two blocks (on DSP cores without Helium, widened into the next 4 * kp bytes of col first:
 * to_rows2w); weights are [oc][kp]. */
TO_INLINE void to_conv(const int8_t *in, const to_geom *g, const int8_t *w, const int32_t *bias, int kp,
                       int8_t pad, const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                       int32_t act_min, int32_t act_max, int8_t *col, int8_t *out) {
  int pixels = g->oh * g->ow, oy = 0, ox = 0;
  for (int p = 0; p < pixels; p += 2) {
    to_im2col(in, g, oy, ox, pad, kp, col);
    if (++ox == g->ow) ox = 0, oy++;
    if (p + 1 == pixels) {
      to_rows1(col, w, bias, kp, g->oc, mult, shift, flags, out_zp, act_min, act_max, out + p * g->oc);
      break;
    }
    to_im2col(in, g, oy, ox, pad, kp, col + kp);
    if (++ox == g->ow) ox = 0, oy++;
#ifdef TINYOPT_WIDEN
    to_rows2w(col, col + kp, (uint32_t *)(col + 2 * kp), w, bias, kp, g->oc, mult, shift, flags, out_zp, act_min,
              act_max, out + p * g->oc, out + (p + 1) * g->oc);
#else
    to_rows2(col, kp, w, bias, kp, g->oc, mult, shift, flags, out_zp, act_min, act_max, out + p * g->oc,
             out + (p + 1) * g->oc);
#endif
  }
}

/* Convolutions with few weights (a first layer: one input channel, a 3x3 kernel): the generator stores the
 * weights widened to int16 (a few hundred bytes more flash), and the receptive field is gathered as int16
 * once per pixel, so each SMLAD takes two MACs straight from two loads, with no unpacking. */
TO_INLINE int32_t to_dot16(const int16_t *a, const int16_t *b, int n, int32_t acc) {
#ifdef TINYOPT_DSP
#pragma GCC unroll 16
  for (int i = 0; i < n; i += 2) acc = __smlad(to_load32(a + i), to_load32(b + i), acc);
#else
  for (int i = 0; i < n; i++) acc += (int32_t)a[i] * b[i];
#endif
  return acc;
}

TO_INLINE void to_conv16(const int8_t *in, const to_geom *g, const int16_t *w, const int32_t *bias, int kp,
                         int8_t pad, const int32_t *mult, const uint8_t *right, int32_t out_zp, int32_t act_min,
                         int32_t act_max, int16_t *col, int8_t *out) {
  for (int oy = 0; oy < g->oh; oy++) {
    for (int ox = 0; ox < g->ow; ox++) {
      int16_t *c = col;
      for (int ky = 0; ky < g->kh; ky++) {
        int iy = oy * g->sh - g->ph + ky * g->dh;
        for (int kx = 0; kx < g->kw; kx++) {
          int ix = ox * g->sw - g->pw + kx * g->dw;
          int inside = iy >= 0 && iy < g->ih && ix >= 0 && ix < g->iw;
          const int8_t *p = in + (iy * g->iw + ix) * g->ic;
          for (int i = 0; i < g->ic; i++) *c++ = inside ? p[i] : pad;
        }
      }
      while (c < col + kp) *c++ = 0;
      /* the receptive field stays in registers for all output channels (kp <= 16) */
      uint32_t cw[8];
#pragma GCC unroll 8
      for (int i = 0; i < kp / 2; i++) cw[i] = to_load32(col + 2 * i);
      int8_t *o = out + (oy * g->ow + ox) * g->oc;
      const int16_t *wr = w;
      for (int ch = 0; ch < g->oc; ch++, wr += kp) {
        int32_t acc = bias[ch];
#pragma GCC unroll 8
        for (int i = 0; i < kp / 2; i++) {
#ifdef TINYOPT_DSP
          acc = __smlad(cw[i], to_load32(wr + 2 * i), acc);
#else
          acc += (int32_t)(int16_t)(cw[i] & 0xFFFF) * wr[2 * i] + (int32_t)(int16_t)(cw[i] >> 16) * wr[2 * i + 1];
#endif
        }
        o[ch] = to_requant_right(acc, mult[ch], right[ch], out_zp, act_min, act_max);
      }
    }
  }
}

/* The taps [*k0, *k1) of a k-tap window starting at s (dilation d) that fall inside [0, n): once per output row
 * or pixel, at most k steps and no division. */
TO_INLINE void to_tap_range(int s, int k, int d, int n, int *k0, int *k1) {
  int a = 0, b = k;
  while (a < k && s + a * d < 0) a++;
  while (b > a && s + (b - 1) * d >= n) b--;
  *k0 = a, *k1 = b;
}

/* a[j] += x[j] * w[j] for the four channels of one tap: x and w are four int8 each (one word). */
TO_INLINE void to_mac4(const int8_t *x, const int8_t *w, int32_t *a) {
#ifdef TINYOPT_DSP
  uint32_t xv = to_load32(x), wv = to_load32(w);
  uint32_t xe = __sxtb16(xv), we = __sxtb16(wv), xo = to_sxtb16_ror8(xv), wo = to_sxtb16_ror8(wv);
  a[0] = __smlabb(xe, we, a[0]);
  a[2] = __smlatt(xe, we, a[2]);
  a[1] = __smlabb(xo, wo, a[1]);
  a[3] = __smlatt(xo, wo, a[3]);
#else
  a[0] += x[0] * w[0], a[1] += x[1] * w[1], a[2] += x[2] * w[2], a[3] += x[3] * w[3];
#endif
}

/* Requantize and store four channels' accumulators, or the n < 4 left at the end of a pixel. */
TO_INLINE void to_store4(const int32_t *a, int8_t *o, int n, const int32_t *mult, const int8_t *shift, int flags,
                         int32_t out_zp, int32_t act_min, int32_t act_max) {
  o[0] = to_requant_s(a[0], mult[0], shift[0], flags, out_zp, act_min, act_max);
  if (n > 1) o[1] = to_requant_s(a[1], mult[1], shift[1], flags, out_zp, act_min, act_max);
  if (n > 2) o[2] = to_requant_s(a[2], mult[2], shift[2], flags, out_zp, act_min, act_max);
  if (n > 3) o[3] = to_requant_s(a[3], mult[3], shift[3], flags, out_zp, act_min, act_max);
}

/* DEPTHWISE_CONV_2D with depth multiplier 1, four channels per step. The generator reorders the weights to
 * [channel group][kh][kw][4] (the last group padded with zero weights; the bias padded to a multiple of 4), so one
 * word holds a tap's four weights and lanes past the channel count multiply by zero (their input bytes, read past
 * the pixel's channels, are never stored). Windows inside the input take every tap at fixed offsets (3x3
 * unrolled). A border window first lists each tap's offset from `in` in the scratch (once per pixel, not per
 * channel): a tap outside the input points at a row of pad bytes (the input zero point, which the folded bias
 * cancels: TFLM skips those taps), so the channel loop has no bounds check either. Scratch: 4 * kh * kw bytes of
 * offsets, then round4(ic) pad bytes. */
TO_INLINE void to_depthwise4(const int8_t *in, const to_geom *g, const int8_t *w, const int32_t *bias, int8_t pad,
                             const int32_t *mult, const int8_t *shift, int flags, int32_t out_zp,
                             int32_t act_min, int32_t act_max, int32_t *scratch, int8_t *out) {
  const int kh = g->kh, kw = g->kw, ic = g->ic, oc = g->oc, taps = g->kh * g->kw;
#ifdef TINYOPT_MVE
  {
    /* Each output row first copies its window's input rows into the scratch, padded with the pad value to every
     * column its windows touch (width pixels), so every window is inside and takes every tap at fixed offsets: no
     * border path (a third of the pixels of a narrow map such as DS-CNN's 25x5). Scratch: kh * width * ic + 16. */
    const int width = (g->ow - 1) * g->sw + (kw - 1) * g->dw + 1, row_step = width * ic, col_step = g->dw * ic;
    const int left = g->pw < width ? g->pw : width, end = g->pw + g->iw < width ? g->pw + g->iw : width;
    int8_t *buf = (int8_t *)scratch;
    /* One tap on sixteen channels: VMULLB/VMULLT multiply the even/odd bytes into int16 (exact), VMOVLB/VMOVLT
     * widen their even/odd halves, so a<k> lane j is channel 4j + k. The empty asm as in to_vmla. */
#define TO_MAC16(xp, wp)                                                                                 \
  do {                                                                                                   \
    int8x16_t xv = vldrbq_s8(xp), wv = vldrbq_s8(wp);                                                    \
    int16x8_t even = vmullbq_int_s8(xv, wv), odd = vmulltq_int_s8(xv, wv);                               \
    a0 = vaddq_s32(a0, vmovlbq_s16(even)), a1 = vaddq_s32(a1, vmovlbq_s16(odd));                         \
    a2 = vaddq_s32(a2, vmovltq_s16(even)), a3 = vaddq_s32(a3, vmovltq_s16(odd));                         \
    __asm__ volatile("" : "+w"(a0), "+w"(a1), "+w"(a2), "+w"(a3));                                     \
  } while (0)
    for (int oy = 0; oy < g->oh; oy++) {
      for (int ky = 0; ky < kh; ky++) {
        int8_t *r = buf + ky * row_step;
        int iy = oy * g->sh - g->ph + ky * g->dh;
        if (iy < 0 || iy >= g->ih) {
          to_fill_bytes(r, row_step, pad);
          continue;
        }
        to_fill_bytes(r, left * ic, pad);
        to_copy_bytes(in + (iy * g->iw + left - g->pw) * ic, (end - left) * ic, r + left * ic);
        to_fill_bytes(r + end * ic, (width - end) * ic, pad);
      }
      for (int ox = 0; ox < g->ow; ox++) {
        const int8_t *x = buf + ox * g->sw * ic;
        int8_t *o = out + (oy * g->ow + ox) * oc;
        /* Sixteen channels a pass (to_mac16); the generator stores weights [group of 16][tap][16] and the bias,
         * multipliers and shifts in the accumulators' lane order (emit_conv.mve_lanes). */
        for (int c = 0; c < oc; c += 16, x += 16) {
          const int8_t *wg = w + c * taps;
          int32x4_t a0 = vldrwq_s32(bias + c), a1 = vldrwq_s32(bias + c + 4), a2 = vldrwq_s32(bias + c + 8);
          int32x4_t a3 = vldrwq_s32(bias + c + 12);
          if (kh == 3 && kw == 3) {
            TO_MAC16(x, wg);
            TO_MAC16(x + col_step, wg + 16);
            TO_MAC16(x + 2 * col_step, wg + 32);
            TO_MAC16(x + row_step, wg + 48);
            TO_MAC16(x + row_step + col_step, wg + 64);
            TO_MAC16(x + row_step + 2 * col_step, wg + 80);
            TO_MAC16(x + 2 * row_step, wg + 96);
            TO_MAC16(x + 2 * row_step + col_step, wg + 112);
            TO_MAC16(x + 2 * row_step + 2 * col_step, wg + 128);
          } else {
            for (int ky = 0; ky < kh; ky++)
              for (int kx = 0; kx < kw; kx++) TO_MAC16(x + ky * row_step + kx * col_step, wg + 16 * (ky * kw + kx));
          }
          to_requant_scatter_x4(a0, mult + c, shift + c, flags, out_zp, act_min, act_max, o + c, oc - c);
          to_requant_scatter_x4(a1, mult + c + 4, shift + c + 4, flags, out_zp, act_min, act_max, o + c + 1,
                                oc - c - 1);
          to_requant_scatter_x4(a2, mult + c + 8, shift + c + 8, flags, out_zp, act_min, act_max, o + c + 2,
                                oc - c - 2);
          to_requant_scatter_x4(a3, mult + c + 12, shift + c + 12, flags, out_zp, act_min, act_max, o + c + 3,
                                oc - c - 3);
        }
      }
    }
#undef TO_MAC16
    return;
  }
#endif
  const int row_step = g->dh * g->iw * ic, col_step = g->dw * ic;
  int32_t *off = scratch;
  int8_t *pad_row = (int8_t *)(scratch + taps);
  for (int c = 0; c < ic; c++) pad_row[c] = pad;
  const int32_t pad_off = (int32_t)(pad_row - in); /* both in the arena */
  for (int oy = 0; oy < g->oh; oy++) {
    int y0 = oy * g->sh - g->ph, ky0, ky1;
    to_tap_range(y0, kh, g->dh, g->ih, &ky0, &ky1);
    for (int ox = 0; ox < g->ow; ox++) {
      int x0 = ox * g->sw - g->pw, kx0, kx1;
      to_tap_range(x0, kw, g->dw, g->iw, &kx0, &kx1);
      int inside = ky0 == 0 && ky1 == kh && kx0 == 0 && kx1 == kw;
      if (!inside)
        for (int ky = 0, t = 0; ky < kh; ky++)
          for (int kx = 0; kx < kw; kx++, t++)
            off[t] = ky >= ky0 && ky < ky1 && kx >= kx0 && kx < kx1
                         ? ((y0 + ky * g->dh) * g->iw + x0 + kx * g->dw) * ic
                         : pad_off;
      int8_t *o = out + (oy * g->ow + ox) * oc;
      const int8_t *x = in + (y0 * g->iw + x0) * ic;
      for (int c = 0; c < oc; c += 4, x += 4) {
        const int8_t *wg = w + c * taps;
        int32_t a[4] = {bias[c], bias[c + 1], bias[c + 2], bias[c + 3]};
        if (inside && kh == 3 && kw == 3) {
          to_mac4(x, wg, a), to_mac4(x + col_step, wg + 4, a), to_mac4(x + 2 * col_step, wg + 8, a);
          to_mac4(x + row_step, wg + 12, a), to_mac4(x + row_step + col_step, wg + 16, a);
          to_mac4(x + row_step + 2 * col_step, wg + 20, a), to_mac4(x + 2 * row_step, wg + 24, a);
          to_mac4(x + 2 * row_step + col_step, wg + 28, a), to_mac4(x + 2 * row_step + 2 * col_step, wg + 32, a);
        } else if (inside) {
          for (int ky = 0; ky < kh; ky++)
            for (int kx = 0; kx < kw; kx++) to_mac4(x + ky * row_step + kx * col_step, wg + 4 * (ky * kw + kx), a);
        } else if (taps == 9) {
          const int8_t *p = in + c;
          to_mac4(p + off[0], wg, a), to_mac4(p + off[1], wg + 4, a), to_mac4(p + off[2], wg + 8, a);
          to_mac4(p + off[3], wg + 12, a), to_mac4(p + off[4], wg + 16, a), to_mac4(p + off[5], wg + 20, a);
          to_mac4(p + off[6], wg + 24, a), to_mac4(p + off[7], wg + 28, a), to_mac4(p + off[8], wg + 32, a);
        } else {
          for (int t = 0; t < taps; t++) to_mac4(in + off[t] + c, wg + 4 * t, a);
        }
        to_store4(a, o + c, oc - c, mult + c, shift + c, flags, out_zp, act_min, act_max);
      }
    }
  }
}

/* DEPTHWISE_CONV_2D, any depth multiplier: output channel c = ci * depth_multiplier + m reads input channel ci;
 * weights are [oc][kh][kw] (reordered by the generator). Taps outside the input take the pad value, as above. */
TO_INLINE void to_depthwise(const int8_t *in, const to_geom *g, int depth_multiplier, const int8_t *w,
                            const int32_t *bias, int8_t pad, const int32_t *mult, const int8_t *shift, int flags,
                            int32_t out_zp, int32_t act_min, int32_t act_max, int8_t *out) {
  const int kh = g->kh, kw = g->kw, taps = g->kh * g->kw, col_step = g->dw * g->ic;
  for (int oy = 0; oy < g->oh; oy++) {
    int y0 = oy * g->sh - g->ph, ky0, ky1;
    to_tap_range(y0, kh, g->dh, g->ih, &ky0, &ky1);
    for (int ox = 0; ox < g->ow; ox++) {
      int x0 = ox * g->sw - g->pw, kx0, kx1;
      to_tap_range(x0, kw, g->dw, g->iw, &kx0, &kx1);
      int8_t *o = out + (oy * g->ow + ox) * g->oc;
      int c = 0;
      for (int ci = 0; ci < g->ic; ci++) {
        for (int m = 0; m < depth_multiplier; m++, c++) {
          const int8_t *wc = w + c * taps;
          int32_t acc = bias[c], pad_sum = 0;  /* pad_sum: the weights of taps outside the input */
          for (int ky = 0; ky < kh; ky++) {
            const int8_t *wr = wc + ky * kw;
            if (ky < ky0 || ky >= ky1) {
              for (int kx = 0; kx < kw; kx++) pad_sum += wr[kx];
              continue;
            }
            const int8_t *x = in + ((y0 + ky * g->dh) * g->iw + x0 + kx0 * g->dw) * g->ic + ci;
            for (int kx = 0; kx < kx0; kx++) pad_sum += wr[kx];
            for (int kx = kx0; kx < kx1; kx++, x += col_step) acc += *x * wr[kx];
            for (int kx = kx1; kx < kw; kx++) pad_sum += wr[kx];
          }
          o[c] = to_requant_s(acc + pad * pad_sum, mult[c], shift[c], flags, out_zp, act_min, act_max);
        }
      }
    }
  }
}

/* MAX_POOL_2D / AVERAGE_POOL_2D over valid taps only, as TFLM's reference kernels. */
/* MAX_POOL_2D over one output pixel's window, several channels per instruction: sixteen with Helium (VMAX), four
 * with the DSP extension (SSUB8 sets a byte's GE flag where the first operand is not smaller, SEL picks by them).
 * Returns the channels done; the scalar loop takes the rest. */
TO_INLINE int to_max_pool_simd(const int8_t *in, const to_geom *g, int y0, int ky0, int ky1, int x0, int kx0, int kx1,
                               int32_t act_min, int32_t act_max, int8_t *o) {
  int c = 0;
#ifdef TINYOPT_MVE
  for (; c < g->ic; c += 16) {
    mve_pred16_t p = vctp8q(g->ic - c);
    int8x16_t m = vdupq_n_s8(-128);
    for (int ky = ky0; ky < ky1; ky++) {
      const int8_t *q = in + ((y0 + ky) * g->iw + x0 + kx0) * g->ic + c;
      for (int kx = kx0; kx < kx1; kx++, q += g->ic) m = vmaxq_s8(m, vldrbq_z_s8(q, p));
    }
    m = vminq_s8(vmaxq_s8(m, vdupq_n_s8((int8_t)act_min)), vdupq_n_s8((int8_t)act_max));
    vstrbq_p_s8(o + c, m, p);
  }
#elif defined(TINYOPT_DSP)
  const uint32_t lo = 0x01010101u * (uint8_t)act_min, hi = 0x01010101u * (uint8_t)act_max;
  for (; c + 3 < g->ic; c += 4) {
    uint32_t m = 0x80808080u;
    for (int ky = ky0; ky < ky1; ky++) {
      const int8_t *q = in + ((y0 + ky) * g->iw + x0 + kx0) * g->ic + c;
      for (int kx = kx0; kx < kx1; kx++, q += g->ic) {
        uint32_t v = to_load32(q);
        (void)__ssub8(v, m);
        m = __sel(v, m);
      }
    }
    (void)__ssub8(m, lo);
    m = __sel(m, lo);
    (void)__ssub8(hi, m);
    m = __sel(m, hi);
    __builtin_memcpy(o + c, &m, 4);
  }
#else
  (void)in, (void)g, (void)y0, (void)ky0, (void)ky1, (void)x0, (void)kx0, (void)kx1, (void)act_min, (void)act_max,
      (void)o;
#endif
  return c;
}

TO_INLINE void to_pool(const int8_t *in, const to_geom *g, int average, int32_t act_min, int32_t act_max,
                       int8_t *out) {
  for (int oy = 0; oy < g->oh; oy++) {
    int y0 = oy * g->sh - g->ph, ky0 = y0 < 0 ? -y0 : 0, ky1 = g->ih - y0 < g->kh ? g->ih - y0 : g->kh;
    for (int ox = 0; ox < g->ow; ox++) {
      int x0 = ox * g->sw - g->pw, kx0 = x0 < 0 ? -x0 : 0, kx1 = g->iw - x0 < g->kw ? g->iw - x0 : g->kw;
      int c = 0;
      if (average) { /* four channels a pass over the window (a global average pool reads every input once) */
        int32_t count = (ky1 - ky0) * (kx1 - kx0);
        for (; c + 3 < g->ic; c += 4) {
          int32_t s[4] = {0, 0, 0, 0};
          for (int ky = ky0; ky < ky1; ky++) {
            const int8_t *p = in + ((y0 + ky) * g->iw + x0 + kx0) * g->ic + c;
            for (int kx = kx0; kx < kx1; kx++, p += g->ic) s[0] += p[0], s[1] += p[1], s[2] += p[2], s[3] += p[3];
          }
          for (int j = 0; j < 4; j++) {
            int32_t acc = count ? (s[j] > 0 ? (s[j] + count / 2) / count : (s[j] - count / 2) / count) : 0;
            acc = acc < act_min ? act_min : acc;
            acc = acc > act_max ? act_max : acc;
            out[(oy * g->ow + ox) * g->ic + c + j] = (int8_t)acc;
          }
        }
      }
      if (!average) c = to_max_pool_simd(in, g, y0, ky0, ky1, x0, kx0, kx1, act_min, act_max,
                                         out + (oy * g->ow + ox) * g->ic);
      for (; c < g->ic; c++) {
        int32_t acc = average ? 0 : -128, count = 0;
        for (int ky = ky0; ky < ky1; ky++) {
          const int8_t *row = in + ((y0 + ky) * g->iw + x0) * g->ic + c;
          for (int kx = kx0; kx < kx1; kx++) {
            int32_t v = row[kx * g->ic];
            if (average) acc += v;
            else if (v > acc) acc = v;
            count++;
          }
        }
        if (average && count) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        acc = acc < act_min ? act_min : acc;
        acc = acc > act_max ? act_max : acc;
        out[(oy * g->ow + ox) * g->ic + c] = (int8_t)acc;
      }
    }
  }
}

/* MBQM for a positive multiplier when |x| < 2^29 (ADD's operands: 9-bit values shifted left by 20, and sums of two
 * of their rescalings by multipliers below one): SRDHM's rounding as in to_requant_s, one SMMULR of 2x when there
 * is no left shift (2x fits, as x << shift would for shift 1). The shifts are the generator's constants. */
TO_INLINE int32_t to_mbqm_small(int32_t x, int32_t multiplier, int shift) {
  int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
  int32_t a = (int32_t)((uint32_t)x << left), r;
#ifdef TINYOPT_DSP
  if (left == 0) {
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a * 2), "r"(multiplier));
    return to_rdbpot(r, right);
  }
#endif
  r = (int32_t)(((int64_t)a * multiplier + ((int64_t)1 << 30)) >> 31);
  return to_rdbpot(r, right);
}

#ifdef TINYOPT_MVE
TO_INLINE int32x4_t to_add4(int32x4_t a, int32x4_t b, int32_t a_off, int32_t b_off, int32_t a_mult, int a_shift,
                            int32_t b_mult, int b_shift, int32_t out_mult, int out_shift, int32_t out_zp,
                            int32_t act_min, int32_t act_max) {
  int32x4_t x = to_mbqm_x4s(vshlq_n_s32(vaddq_n_s32(a, a_off), 20), a_mult, a_shift);
  int32x4_t y = to_mbqm_x4s(vshlq_n_s32(vaddq_n_s32(b, b_off), 20), b_mult, b_shift);
  int32x4_t v = vaddq_n_s32(to_mbqm_x4s(vaddq_s32(x, y), out_mult, out_shift), out_zp);
  return vminq_s32(vmaxq_s32(v, vdupq_n_s32(act_min)), vdupq_n_s32(act_max));
}
#endif

/* ADD of two same-shape int8 tensors (TFLM's AddElementwise, left shift 20). */
TO_INLINE void to_add(const int8_t *a, const int8_t *b, int n, int32_t a_off, int32_t b_off, int32_t a_mult,
                      int a_shift, int32_t b_mult, int b_shift, int32_t out_mult, int out_shift, int32_t out_zp,
                      int32_t act_min, int32_t act_max, int8_t *out) {
#ifdef TINYOPT_MVE
  /* four elements per pass, then a predicated tail; each MBQM as to_mbqm_x4, with the generator's constant shifts */
#define TO_ADD4(x, y)                                                                                          \
  to_add4(x, y, a_off, b_off, a_mult, a_shift, b_mult, b_shift, out_mult, out_shift, out_zp, act_min, act_max)
  int i = 0;
  for (; i + 4 <= n; i += 4) vstrbq_s32(out + i, TO_ADD4(vldrbq_s32(a + i), vldrbq_s32(b + i)));
  if (i < n) {
    mve_pred16_t p = vctp32q(n - i);
    vstrbq_p_s32(out + i, TO_ADD4(vldrbq_z_s32(a + i, p), vldrbq_z_s32(b + i, p)), p);
  }
#undef TO_ADD4
  return;
#endif
  for (int i = 0; i < n; i++) {
    int32_t x = to_mbqm_small((a[i] + a_off) * (1 << 20), a_mult, a_shift);
    int32_t y = to_mbqm_small((b[i] + b_off) * (1 << 20), b_mult, b_shift);
    int32_t v = to_mbqm_small(x + y, out_mult, out_shift) + out_zp;
    v = v < act_min ? act_min : v;
    v = v > act_max ? act_max : v;
    out[i] = (int8_t)v;
  }
}

/* Round half away from zero without a C library (TfLiteRound). */
TO_INLINE double to_round(double d) {
  double t = (double)(int64_t)d, diff = d - t;
  if (diff >= 0.5) t += 1.0;
  if (diff <= -0.5) t -= 1.0;
  return t;
}

TO_INLINE float to_roundf(float f) {
  float t = (float)(int32_t)f, diff = f - t;
  if (diff >= 0.5f) t += 1.0f;
  if (diff <= -0.5f) t -= 1.0f;
  return t;
}

/* QUANTIZE float -> int8 (TFLM's AffineQuantize: round(x / scale) in double, plus the zero point).
 * A float estimate decides every value whose quotient is not within 1e-3 of a rounding tie; only those
 * near a tie pay for the exact double division (soft-float on single-precision FPUs). */
TO_INLINE void to_quantize(const float *in, int n, double scale, float inv_scale, int32_t zp, int8_t *out) {
  for (int i = 0; i < n; i++) {
    float f = in[i] * inv_scale;
    int32_t q;
    if (f > 400.0f) q = 128 - zp;
    else if (f < -400.0f) q = -129 - zp;
    else {
      float half = f >= 0.0f ? 0.5f : -0.5f;
      q = (int32_t)(f + half); /* round half away from zero */
      float frac = f - (float)(int32_t)f;
      frac = frac < 0.0f ? -frac : frac;
      if (frac < 0.501f && frac > 0.499f) q = (int32_t)to_round((double)in[i] / scale); /* near a tie */
    }
    q += zp;
    q = q < -128 ? -128 : q;
    q = q > 127 ? 127 : q;
    out[i] = (int8_t)q;
  }
}

/* DEQUANTIZE int8 -> float: scale * (q - zp) is exact in float for 8-bit q, as TFLM's double product. */
TO_INLINE void to_dequantize(const int8_t *in, int n, float scale, int32_t zp, float *out) {
  for (int i = 0; i < n; i++) out[i] = scale * (float)(in[i] - zp);
}

/* gemmlowp fixed point, as TFLite's int8 softmax uses it. */
TO_INLINE int32_t to_rounding_half_sum(int32_t a, int32_t b) {
  int64_t sum = (int64_t)a + b;
  int64_t sign = sum >= 0 ? 1 : -1;
  return (int32_t)((sum + sign) / 2);
}

TO_INLINE int32_t to_sat_shift_left(int32_t x, int exponent) {
  int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1);
  if (x > threshold) return INT32_MAX;
  if (x < -threshold) return INT32_MIN;
  return (int32_t)((uint32_t)x << exponent);
}

/* exp(x) for x in [-1/4, 0) in Q0.31. */
TO_INLINE int32_t to_exp_quarter(int32_t a) {
  const int32_t constant_term = 1895147668, one_third = 715827883;
  int32_t x = a + (1 << 28);
  int32_t x2 = to_srdhm(x, x), x3 = to_srdhm(x2, x), x4 = to_srdhm(x2, x2);
  int32_t x4_over_4 = to_rdbpot(x4, 2);
  int32_t poly = to_rdbpot(to_srdhm(x4_over_4 + x3, one_third) + x2, 1);
  return constant_term + to_srdhm(constant_term, x + poly);
}

/* gemmlowp's exp_on_negative_values for a Q5.26 input, result in Q0.31. */
TO_INLINE int32_t to_exp_on_negative(int32_t a) {
  const int32_t quarter = 1 << 24, mask = quarter - 1;
  int32_t a_mod = (a & mask) - quarter;
  int32_t result = to_exp_quarter(to_sat_shift_left(a_mod, 5));
  int32_t remainder = a_mod - a;
  static const int32_t multipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
  for (int k = 0; k < 7; k++) /* the barrel shifter: exp(-2^e) for e = -2..+4 */
    if (remainder & (1 << (24 + k))) result = to_srdhm(result, multipliers[k]);
  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + x) for x in [0, 1), Q0.31 in and out (Newton-Raphson, three steps). */
TO_INLINE int32_t to_one_over_one_plus_x(int32_t a) {
  int32_t half_denominator = to_rounding_half_sum(a, INT32_MAX);
  int32_t x = 1515870810 + to_srdhm(half_denominator, -1010580540);
  for (int i = 0; i < 3; i++) {
    int32_t one_minus = (1 << 29) - to_srdhm(half_denominator, x);
    x = x + to_sat_shift_left(to_srdhm(x, one_minus), 2);
  }
  return to_sat_shift_left(x, 1);
}

/* SOFTMAX int8 -> int8 (TFLM's reference: gemmlowp fixed point, 5 integer bits for differences). */
TO_INLINE void to_softmax(const int8_t *in, int outer, int depth, int32_t input_multiplier, int input_left_shift,
                          int32_t diff_min, int8_t *out) {
  for (int i = 0; i < outer; i++) {
    const int8_t *x = in + i * depth;
    int8_t *y = out + i * depth;
    int32_t max_in_row = -128;
    for (int c = 0; c < depth; c++) max_in_row = x[c] > max_in_row ? x[c] : max_in_row;
    int32_t sum_of_exps = 0; /* Q12.19 */
    for (int c = 0; c < depth; c++) {
      int32_t diff = x[c] - max_in_row;
      if (diff >= diff_min) {
        int32_t scaled = to_srdhm((int32_t)((uint32_t)diff << input_left_shift), input_multiplier);
        sum_of_exps += to_rdbpot(to_exp_on_negative(scaled), 12);
      }
    }
    int headroom_plus_one = __builtin_clz((uint32_t)sum_of_exps);
    int num_bits_over_unit = 12 - headroom_plus_one;
    int32_t shifted_sum_minus_one = (int32_t)(((uint32_t)sum_of_exps << headroom_plus_one) - (1u << 31));
    int32_t shifted_scale = to_one_over_one_plus_x(shifted_sum_minus_one);
    for (int c = 0; c < depth; c++) {
      int32_t diff = x[c] - max_in_row;
      if (diff >= diff_min) {
        int32_t scaled = to_srdhm((int32_t)((uint32_t)diff << input_left_shift), input_multiplier);
        int32_t e = to_exp_on_negative(scaled);
        int32_t v = to_rdbpot(to_srdhm(shifted_scale, e), num_bits_over_unit + 31 - 8) - 128;
        y[c] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
      } else {
        y[c] = -128;
      }
    }
  }
}

/* MEAN over the inner axes of [outer][n][depth] (TFLM's QuantizedMeanOrSumExtraArgs: the 1/n is folded into
 * the output multiplier by the generator). */
TO_INLINE void to_mean(const int8_t *in, int outer, int n, int depth, int32_t in_zp, int32_t mult, int shift,
                       int32_t out_zp, int32_t *sum, int8_t *out) {
  for (int o = 0; o < outer; o++) {
    for (int c = 0; c < depth; c++) sum[c] = 0;
    for (int k = 0; k < n; k++)
      for (int c = 0; c < depth; c++) sum[c] += in[(o * n + k) * depth + c];
    for (int c = 0; c < depth; c++) {
      int32_t v = to_mbqm(sum[c] - in_zp * n, mult, shift) + out_zp;
      out[o * depth + c] = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
    }
  }
}

TO_INLINE void to_copy(const void *src, int n, void *dst) {
  const uint8_t *s = (const uint8_t *)src;
  uint8_t *d = (uint8_t *)dst;
  if (s != d)
    for (int i = 0; i < n; i++) d[i] = s[i];
}

#endif
