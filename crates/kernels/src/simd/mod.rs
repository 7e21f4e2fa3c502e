//! CPU features and SIMD registers: the one place that asks the CPU which vector instructions it
//! has, and the register types every vector kernel is written over. No other module of this
//! crate calls an intrinsic.
//!
//! Every vector kernel is compiled for its features with `#[target_feature]` and only called
//! after `features()` says the CPU has them; that check is what makes calling it sound.
//!
//! - `avx512`: `Zmm` (16 f32), `I32x16`, lane `Mask`s and a 16 × 16 `transpose`, for the GEMM
//!   kernels and the 2×2 max pool. Their arithmetic is made of safe `#[target_feature(enable =
//!   "avx512f")]` functions: the compiler lets only functions compiled for AVX-512F call them, so
//!   no call site needs an `unsafe` block; loads and stores through pointers stay `unsafe fn`.
//!   (They are `#[inline]`, as the intrinsics are: `#[inline(always)]` cannot be combined with
//!   `#[target_feature]`.) Each method is one intrinsic, so a kernel's instructions, and its
//!   results to the bit, are those of the intrinsics written out.
//! - `Registers`: a block of `LANES` values in registers, which Winograd's transforms are
//!   generic over: `Zmm`, or `Ymm2` (`avx2`) on CPUs with AVX2 and FMA but no AVX-512. Its
//!   methods are `unsafe` and `#[inline(always)]`, to be inlined into a function compiled for
//!   the implementation's features.

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
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Ymm2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::{transpose, I32x16, Mask, Zmm};

/// A block held in registers. Every method must be inlined into a function compiled for the
/// implementation's CPU features (hence unsafe), so that the intrinsics inline too.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Registers: Copy {
    unsafe fn zero() -> Self;
    unsafe fn load(block: &Block) -> Self;
    unsafe fn store(self) -> Block;
    /// acc + c · v.
    unsafe fn mul_add(c: f32, v: Self, acc: Self) -> Self;
}

#[cfg(target_arch = "x86_64")]
impl Registers for Zmm {
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller is compiled for AVX-512F (the trait's contract).
        unsafe { Zmm::zero() }
    }
    #[inline(always)]
    unsafe fn load(block: &Block) -> Self {
        // SAFETY: a block is LANES values, all 16 lanes read inside it; the caller is compiled
        // for AVX-512F.
        unsafe { Zmm::load(block.as_ptr()) }
    }
    #[inline(always)]
    unsafe fn store(self) -> Block {
        // SAFETY: the caller is compiled for AVX-512F.
        unsafe { self.to_block() }
    }
    #[inline(always)]
    unsafe fn mul_add(c: f32, v: Self, acc: Self) -> Self {
        // SAFETY: the caller is compiled for AVX-512F.
        unsafe { Zmm::splat(c).mul_add(v, acc) }
    }
}
