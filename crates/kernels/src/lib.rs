//! pare's numerical kernels: dense products (GEMM), convolutions, pooling, BatchNorm,
//! element-wise ops and their gradients, on ndarray values and plain slices, with the seeded
//! randomness they draw from.
//!
//! Invariants every kernel keeps:
//! - Results do not depend on the thread count: work splits into chunks fixed by the shapes,
//!   and every reduction sums its terms (and the chunks' partial sums) in a fixed order.
//! - No graph knowledge: kernels see shapes, slices and arrays, never pare's IR. The executor in
//!   pare-train maps nodes onto them.
//! - Every `unsafe` block of pare lives in this crate, each with a `// SAFETY:` comment saying
//!   why it is sound (bounds, alignment, the CPU feature checked in `simd`).
//! - Every vector path is written over `simd`'s register types (`Zmm`, `I32x16`, `Mask`, the
//!   `Registers` trait): no other module calls an intrinsic.
//!
//! Imports: std, ndarray, rayon, matrixmultiply and libc only; no pare crate (pare-data, the
//! trainer and the pruner depend on this one). Every other pare crate forbids unsafe code (or
//! denies it, where ndarray's `s!` brings an `allow` of its own) and calls these kernels instead.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
pub mod gemm;
pub mod linear;
pub mod memory;
pub mod pool;
pub mod rng;
mod scratch;
mod simd;
pub mod sums;
#[cfg(test)]
mod testing;
pub mod window;

/// A new array of `shape` (row-major), zeroed `chunk` values at a time in parallel, each chunk
/// then handed to `fill(index, values)` while it is in cache. `Array::zeros` zeroes a fresh
/// array in one pass on one thread, which on activation-sized outputs was a visible cost.
pub(crate) fn par_zeroed<Sh: ndarray::ShapeBuilder>(
    shape: Sh,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> ndarray::Array<f32, Sh::Dim> {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let mut a = ndarray::Array::<f32, Sh::Dim>::uninit(shape);
    a.as_slice_mut()
        .expect("fresh array")
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, values)| {
            values.iter_mut().for_each(|v| {
                v.write(0.0);
            });
            // SAFETY: every value of this chunk was written just above.
            let values = unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) };
            fill(i, values);
        });
    // SAFETY: the chunks cover the array, and each was zeroed above.
    unsafe { a.assume_init() }
}

/// `a` in standard (row-major) layout, copied only when it is not in it already.
pub fn into_standard<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> ndarray::Array<f32, D> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}
