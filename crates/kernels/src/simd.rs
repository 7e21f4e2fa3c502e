//! CPU features and SIMD registers: the one place that asks the CPU which vector instructions it
//! has, and the register types the vector kernels are written over.
//!
//! Every vector kernel is compiled for its features with `#[target_feature]` and only called
//! after `features()` says the CPU has them; that check is what makes calling it sound.

use std::sync::OnceLock;

/// The vector instructions of this CPU that the kernels use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Features {
    /// AVX-512 Foundation: the GEMM kernels, the 2×2 max pool and Winograd's transforms.
    pub(crate) avx512f: bool,
    /// AVX2 with FMA: Winograd's transforms where AVX-512 is missing.
    pub(crate) avx2_fma: bool,
}

/// This CPU's features, detected on the first call.
pub(crate) fn features() -> Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    *FEATURES.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    use std::arch::is_x86_feature_detected as has;
    Features {
        avx512f: has!("avx512f"),
        avx2_fma: has!("avx2") && has!("fma"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features {
        avx512f: false,
        avx2_fma: false,
    }
}

/// Values in one AVX-512 register, and in a `Block`.
pub(crate) const LANES: usize = 16;

/// `LANES` values that a vector kernel loads and stores as one.
pub(crate) type Block = [f32; LANES];

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{lanes_mask, Registers, Ymm2, Zmm};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Block, LANES};
    use std::arch::x86_64::*;

    /// A mask of the first `n` (at most `LANES`) lanes of an AVX-512 register.
    pub(crate) fn lanes_mask(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// A block held in registers. Every method must be inlined into a function compiled for the
    /// implementation's CPU features (hence unsafe), so that the intrinsics inline too.
    pub(crate) trait Registers: Copy {
        unsafe fn zero() -> Self;
        unsafe fn load(block: &Block) -> Self;
        unsafe fn store(self) -> Block;
        /// acc + c · v.
        unsafe fn mul_add(c: f32, v: Self, acc: Self) -> Self;
    }

    /// One AVX-512 register (needs AVX-512F).
    #[derive(Clone, Copy)]
    pub(crate) struct Zmm(__m512);

    impl Registers for Zmm {
        #[inline(always)]
        unsafe fn zero() -> Self {
            Zmm(_mm512_setzero_ps())
        }
        #[inline(always)]
        unsafe fn load(block: &Block) -> Self {
            // SAFETY: a block is LANES values, all 16 lanes read inside it; unaligned loads.
            Zmm(unsafe { _mm512_loadu_ps(block.as_ptr()) })
        }
        #[inline(always)]
        unsafe fn store(self) -> Block {
            let mut out = [0.0f32; LANES];
            // SAFETY: `out` holds the 16 lanes written; unaligned stores.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), self.0) };
            out
        }
        #[inline(always)]
        unsafe fn mul_add(c: f32, v: Self, acc: Self) -> Self {
            Zmm(_mm512_fmadd_ps(_mm512_set1_ps(c), v.0, acc.0))
        }
    }

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
}
