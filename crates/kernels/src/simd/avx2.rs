//! Two AVX registers as one block of `LANES` values, for Winograd's transforms on CPUs with AVX2
//! and FMA but no AVX-512.

use super::{Block, Registers, LANES};
use std::arch::x86_64::*;

/// Two AVX registers (needs AVX2 and FMA).
#[derive(Clone, Copy)]
pub(crate) struct Ymm2(__m256, __m256);

impl Registers for Ymm2 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Ymm2(_mm256_setzero_ps(), _mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn load(block: &Block) -> Self {
        let p = block.as_ptr();
        // SAFETY: the two 8-lane loads read the block's first and second half, inside it.
        unsafe { Ymm2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(LANES / 2))) }
    }
    #[inline(always)]
    unsafe fn store(self) -> Block {
        let mut out = [0.0f32; LANES];
        let p = out.as_mut_ptr();
        // SAFETY: the two 8-lane stores write `out`'s first and second half, inside it.
        unsafe {
            _mm256_storeu_ps(p, self.0);
            _mm256_storeu_ps(p.add(LANES / 2), self.1);
        }
        out
    }
    #[inline(always)]
    unsafe fn mul_add(c: f32, v: Self, acc: Self) -> Self {
        let c = _mm256_set1_ps(c);
        Ymm2(
            _mm256_fmadd_ps(c, v.0, acc.0),
            _mm256_fmadd_ps(c, v.1, acc.1),
        )
    }
}
