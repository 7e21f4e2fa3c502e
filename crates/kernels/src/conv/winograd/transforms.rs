//! Winograd F(4×4, 3×3)'s tile transforms (Bᵀ d B, G g Gᵀ, Aᵀ m A and the gradients' transposes),
//! applied to tiles of `LANES`-channel blocks: in registers on AVX-512 or AVX2 with FMA, in
//! plain Rust elsewhere. Every version adds the same products in the same order.

use crate::simd::{self, Block, LANES};

/// Output values per tile side.
pub(super) const M: usize = 4;
/// Input values per tile side: M + 3 − 1.
pub(super) const A: usize = 6;
/// Points of a transformed tile.
pub(super) const POINTS: usize = A * A;

/// A tile transform: y = T x Tᵀ for the matrix T (`OUT` × `IN`), applied to tiles of vectors.
/// The matrix is a constant so that each transform compiles to straight-line code with its zero
/// coefficients gone.
pub(super) trait Transform {
    const OUT: usize;
    const IN: usize;
    /// T, row-major, in the top-left corner of a 6 × 6 frame.
    const MATRIX: [[f32; A]; A];
}

/// The transpose of a matrix held in a 6 × 6 frame.
const fn transposed(m: [[f32; A]; A]) -> [[f32; A]; A] {
    let mut t = [[0.0; A]; A];
    let mut i = 0;
    while i < A {
        let mut j = 0;
        while j < A {
            t[j][i] = m[i][j];
            j += 1;
        }
        i += 1;
    }
    t
}

/// Bᵀ: an input tile to its transform.
pub(super) struct InputTiles;
impl Transform for InputTiles {
    const OUT: usize = A;
    const IN: usize = A;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
}

/// G: a 3×3 kernel to its transform.
pub(super) struct Kernels;
impl Transform for Kernels {
    const OUT: usize = A;
    const IN: usize = 3;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [1.0 / 4.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 0.0, 0.0, 0.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 0.0, 0.0, 0.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    ];
}

/// Gᵀ: the gradient of a transformed kernel back to the kernel's.
pub(super) struct KernelGradients;
impl Transform for KernelGradients {
    const OUT: usize = 3;
    const IN: usize = A;
    const MATRIX: [[f32; A]; A] = transposed(Kernels::MATRIX);
}

/// Aᵀ: a transformed product back to its output tile.
pub(super) struct OutputTiles;
impl Transform for OutputTiles {
    const OUT: usize = M;
    const IN: usize = A;
    #[rustfmt::skip]
    const MATRIX: [[f32; A]; A] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
        [0.0; A],
        [0.0; A],
    ];
}

/// A: an output tile's gradient to the gradient of its transformed product.
pub(super) struct OutputGradients;
impl Transform for OutputGradients {
    const OUT: usize = A;
    const IN: usize = M;
    const MATRIX: [[f32; A]; A] = transposed(OutputTiles::MATRIX);
}

/// `channels` padded to whole blocks: the width of every transformed buffer.
pub(super) fn in_blocks(channels: usize) -> usize {
    channels.next_multiple_of(LANES)
}

/// The block at `at` in `buf`.
#[inline(always)]
pub(super) fn block(buf: &[f32], at: usize) -> &Block {
    buf[at..][..LANES].try_into().expect("a block")
}

/// y = T x Tᵀ for one tile of blocks: x's element (r, s) is `read(r·IN + s)`, y's element (i, j)
/// goes to `write(i·OUT + j, ..)`. T is applied to the columns, then to the rows.
#[inline(always)]
pub(super) fn transform_tile<'a, T: Transform>(
    read: impl Fn(usize) -> &'a Block,
    write: impl FnMut(usize, &Block),
) {
    #[cfg(target_arch = "x86_64")]
    {
        let features = simd::features();
        if features.avx512f {
            // SAFETY: the CPU has AVX-512F, the feature the function is compiled for.
            unsafe { x86::transform_tile_avx512::<T>(read, write) };
            return;
        }
        if features.avx2_fma {
            // SAFETY: the CPU has AVX2 and FMA, the features the function is compiled for.
            unsafe { x86::transform_tile_avx2::<T>(read, write) };
            return;
        }
    }
    portable_transform_tile::<T>(read, write);
}

/// `transform_tile` in plain Rust, for CPUs without AVX2.
#[inline(always)]
fn portable_transform_tile<'a, T: Transform>(
    read: impl Fn(usize) -> &'a Block,
    mut write: impl FnMut(usize, &Block),
) {
    let (n, k) = (T::OUT, T::IN);
    let mut half = [[0.0f32; LANES]; POINTS];
    for s in 0..k {
        for (i, coefficients) in T::MATRIX.iter().enumerate().take(n) {
            half[i * A + s] = combine(coefficients, k, |r| read(r * k + s));
        }
    }
    for i in 0..n {
        for (j, coefficients) in T::MATRIX.iter().enumerate().take(n) {
            write(i * n + j, &combine(coefficients, k, |s| &half[i * A + s]));
        }
    }
}

/// Σ coefficients[r] · v(r) over r < len, skipping the zero coefficients.
#[inline(always)]
fn combine<'a>(coefficients: &[f32; A], len: usize, v: impl Fn(usize) -> &'a Block) -> Block {
    let mut acc = [0.0f32; LANES];
    for (r, c) in coefficients.iter().enumerate().take(len) {
        if *c != 0.0 {
            acc.iter_mut().zip(v(r)).for_each(|(a, v)| *a += c * v);
        }
    }
    acc
}

/// `transform_tile` with each block in registers, written with intrinsics: the compiler's own
/// vectorisation of the portable version splits the blocks into partial-width pieces and
/// round-trips them through the stack. One generic body, compiled once for AVX-512 (a block in
/// one register) and once for AVX2 with FMA (a block in two).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Transform, A, POINTS};
    use crate::simd::{Block, Registers, Ymm2, Zmm};

    #[target_feature(enable = "avx512f")]
    pub(super) fn transform_tile_avx512<'a, T: Transform>(
        read: impl Fn(usize) -> &'a Block,
        write: impl FnMut(usize, &Block),
    ) {
        // SAFETY: this function is compiled for the features `Zmm` needs.
        unsafe { transform_tile::<Zmm, T>(read, write) }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_tile_avx2<'a, T: Transform>(
        read: impl Fn(usize) -> &'a Block,
        write: impl FnMut(usize, &Block),
    ) {
        // SAFETY: this function is compiled for the features `Ymm2` needs.
        unsafe { transform_tile::<Ymm2, T>(read, write) }
    }

    #[inline(always)]
    unsafe fn transform_tile<'a, R: Registers, T: Transform>(
        read: impl Fn(usize) -> &'a Block,
        mut write: impl FnMut(usize, &Block),
    ) {
        let (n, k) = (T::OUT, T::IN);
        // SAFETY: the caller is compiled for `R`'s features (the functions above); blocks are
        // read and written through references, so every load and store is inside a block.
        unsafe {
            let mut half = [R::zero(); POINTS];
            for s in 0..k {
                let mut column = [R::zero(); A];
                for (r, value) in column.iter_mut().enumerate().take(k) {
                    *value = R::load(read(r * k + s));
                }
                for (i, coefficients) in T::MATRIX.iter().enumerate().take(n) {
                    half[i * A + s] = combine(coefficients, k, &column);
                }
            }
            for i in 0..n {
                let mut row = [R::zero(); A];
                row[..k].copy_from_slice(&half[i * A..][..k]);
                for (j, coefficients) in T::MATRIX.iter().enumerate().take(n) {
                    write(i * n + j, &combine(coefficients, k, &row).store());
                }
            }
        }
    }

    /// Σ coefficients[r] · v[r] over r < len, skipping the zero coefficients.
    #[inline(always)]
    unsafe fn combine<R: Registers>(coefficients: &[f32; A], len: usize, v: &[R; A]) -> R {
        // SAFETY: the caller is compiled for `R`'s features; only register arithmetic here.
        unsafe {
            let mut acc = R::zero();
            for (c, v) in coefficients.iter().zip(v).take(len) {
                if *c != 0.0 {
                    acc = R::mul_add(*c, *v, acc);
                }
            }
            acc
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::max_error;
    use super::*;

    /// Where a transform under test writes its blocks.
    type Sink<'a> = dyn FnMut(usize, &Block) + 'a;

    /// Every transform, in every version the CPU can run, against T x Tᵀ computed from its
    /// definition.
    #[test]
    fn tile_transforms_match_their_definition() {
        fn check<T: Transform>() {
            let (n, k) = (T::OUT, T::IN);
            let x: Vec<Block> = (0..k * k)
                .map(|e| std::array::from_fn(|l| ((e * LANES + l) as f32 * 0.37).sin()))
                .collect();
            let mut want = vec![[0.0f64; LANES]; n * n];
            for (ij, want) in want.iter_mut().enumerate() {
                let (i, j) = (ij / n, ij % n);
                for (rs, x) in x.iter().enumerate() {
                    let c = T::MATRIX[i][rs / k] as f64 * T::MATRIX[j][rs % k] as f64;
                    want.iter_mut()
                        .zip(x)
                        .for_each(|(w, x)| *w += c * *x as f64);
                }
            }
            let collect = |f: &dyn Fn(&mut Sink)| {
                let mut out = vec![[f32::NAN; LANES]; n * n];
                f(&mut |ij, v| out[ij] = *v);
                out.concat()
            };
            let mut versions = vec![(
                "portable",
                collect(&|w| portable_transform_tile::<T>(|e| &x[e], w)),
            )];
            #[cfg(target_arch = "x86_64")]
            {
                let features = simd::features();
                if features.avx512f {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    let f = |w: &mut Sink| unsafe { x86::transform_tile_avx512::<T>(|e| &x[e], w) };
                    versions.push(("avx512", collect(&f)));
                }
                if features.avx2_fma {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    let f = |w: &mut Sink| unsafe { x86::transform_tile_avx2::<T>(|e| &x[e], w) };
                    versions.push(("avx2", collect(&f)));
                }
            }
            for (version, got) in versions {
                let err = max_error(&got, want.concat().into_iter());
                let transform = std::any::type_name::<T>();
                assert!(err < 1e-5, "{transform}, {version}: {err}");
            }
        }
        check::<InputTiles>();
        check::<Kernels>();
        check::<KernelGradients>();
        check::<OutputTiles>();
        check::<OutputGradients>();
    }
}
