//! AVX-512 registers: 16 f32 (`Zmm`) or 16 i32 (`I32x16`) values, and a lane mask (`Mask`).
//!
//! Each operation is one intrinsic, in the order the kernels call them, so that a kernel written
//! over these types compiles to the instructions it would with the intrinsics spelled out. The
//! arithmetic is safe to call from a function compiled with `#[target_feature(enable =
//! "avx512f")]` (the compiler refuses any other caller); what reads or writes through a pointer
//! is an `unsafe fn` whose caller vouches for the memory.

use super::{Block, LANES};
use std::arch::x86_64::*;

/// A mask of lanes of an AVX-512 register: the lanes a masked load reads, a masked store writes,
/// or a comparison found true.
#[derive(Clone, Copy)]
pub(crate) struct Mask(__mmask16);

impl Mask {
    /// Every lane.
    pub(crate) const ALL: Mask = Mask(!0);

    /// The first `n` (at most `LANES`) lanes.
    pub(crate) fn first(n: usize) -> Mask {
        Mask(((1u32 << n) - 1) as __mmask16)
    }
}

/// One AVX-512 register of 16 f32 values.
#[derive(Clone, Copy)]
pub(crate) struct Zmm(__m512);

impl Zmm {
    /// Every lane 0.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn zero() -> Zmm {
        Zmm(_mm512_setzero_ps())
    }

    /// Every lane `v`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn splat(v: f32) -> Zmm {
        Zmm(_mm512_set1_ps(v))
    }

    /// The 16 values from `p` (unaligned).
    ///
    /// # Safety
    /// `p` points at 16 readable values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn load(p: *const f32) -> Zmm {
        // SAFETY: the caller keeps the 16 values readable.
        Zmm(unsafe { _mm512_loadu_ps(p) })
    }

    /// The lanes of `mask` from `p` (unaligned), the others 0.
    ///
    /// # Safety
    /// The values at `p` under the mask's lanes are readable; the others are not read.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn load_masked(mask: Mask, p: *const f32) -> Zmm {
        // SAFETY: the caller keeps the masked lanes readable; masked-off lanes are not read.
        Zmm(unsafe { _mm512_maskz_loadu_ps(mask.0, p) })
    }

    /// Writes the lanes of `mask` to `p` (unaligned).
    ///
    /// # Safety
    /// The values at `p` under the mask's lanes are writable; the others are not written.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn store_masked(self, mask: Mask, p: *mut f32) {
        // SAFETY: the caller keeps the masked lanes writable; masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, mask.0, self.0) }
    }

    /// The 16 lanes as a block.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn to_block(self) -> Block {
        let mut out = [0.0f32; LANES];
        // SAFETY: `out` holds the 16 lanes written; unaligned stores.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self.0) };
        out
    }

    /// self · other, lane by lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn mul(self, other: Zmm) -> Zmm {
        Zmm(_mm512_mul_ps(self.0, other.0))
    }

    /// self · other + acc, lane by lane, rounded once (a fused multiply-add).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn mul_add(self, other: Zmm, acc: Zmm) -> Zmm {
        Zmm(_mm512_fmadd_ps(self.0, other.0, acc.0))
    }

    /// The sum of the 16 lanes (in the intrinsic's fixed tree order).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn sum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }

    /// The lanes where self > other (ordered: false where either is NaN).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn greater(self, other: Zmm) -> Mask {
        Mask(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, other.0))
    }

    /// `other`'s lanes where `mask` is set, self's elsewhere.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn blend(self, mask: Mask, other: Zmm) -> Zmm {
        Zmm(_mm512_mask_blend_ps(mask.0, self.0, other.0))
    }

    /// Lane i is lane `index[i]` of the 32 lanes of `self` followed by `high`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn permute2(self, index: I32x16, high: Zmm) -> Zmm {
        Zmm(_mm512_permutex2var_ps(self.0, index.0, high.0))
    }
}

/// Transposes 16 × 16 values in registers: `r[i]` holds row i before and column i after.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose(r: &mut [Zmm; LANES]) {
    let mut t = [_mm512_setzero_ps(); LANES];
    // Pairs of rows interleaved value by value, then pairs of pairs two values at a time: in
    // each 128-bit lane L, r[4g + c] ends up with column 4L + c of rows 4g..4g + 4.
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i].0, r[2 * i + 1].0);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i].0, r[2 * i + 1].0);
    }
    let pd = _mm512_castps_pd;
    for g in 0..4 {
        let (lo, hi) = (t[4 * g], t[4 * g + 1]);
        let (next_lo, next_hi) = (t[4 * g + 2], t[4 * g + 3]);
        r[4 * g].0 = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(lo), pd(next_lo)));
        r[4 * g + 1].0 = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(lo), pd(next_lo)));
        r[4 * g + 2].0 = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(hi), pd(next_hi)));
        r[4 * g + 3].0 = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(hi), pd(next_hi)));
    }
    // Then the 128-bit lanes gathered across the four groups of rows, in two rounds.
    for half in 0..2 {
        for c in 0..4 {
            let (a, b) = (r[8 * half + c].0, r[8 * half + 4 + c].0);
            t[8 * half + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * half + 4 + c] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
    }
    for j in 0..8 {
        r[j].0 = _mm512_shuffle_f32x4::<0x88>(t[j], t[8 + j]);
        r[8 + j].0 = _mm512_shuffle_f32x4::<0xdd>(t[j], t[8 + j]);
    }
}

/// One AVX-512 register of 16 i32 values: the indices a kernel carries next to its values.
#[derive(Clone, Copy)]
pub(crate) struct I32x16(__m512i);

impl I32x16 {
    /// The 16 values, lane 0 first.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn from_array(v: [i32; LANES]) -> I32x16 {
        I32x16(_mm512_setr_epi32(
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
            v[14], v[15],
        ))
    }

    /// Every lane `v`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn splat(v: i32) -> I32x16 {
        I32x16(_mm512_set1_epi32(v))
    }

    /// self + other, lane by lane (wrapping).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn add(self, other: I32x16) -> I32x16 {
        I32x16(_mm512_add_epi32(self.0, other.0))
    }

    /// `other`'s lanes where `mask` is set, self's elsewhere.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn blend(self, mask: Mask, other: I32x16) -> I32x16 {
        I32x16(_mm512_mask_blend_epi32(mask.0, self.0, other.0))
    }

    /// Writes the lanes of `mask` to `p` (unaligned).
    ///
    /// # Safety
    /// The values at `p` under the mask's lanes are writable; the others are not written.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn store_masked(self, mask: Mask, p: *mut i32) {
        // SAFETY: the caller keeps the masked lanes writable; masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_epi32(p, mask.0, self.0) }
    }
}
