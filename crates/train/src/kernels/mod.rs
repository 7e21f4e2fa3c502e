//! Numerical kernels, one family per file, each with its forward, backward and reference tests.
//! Kernels work on ndarray values and know nothing of the graph.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
pub mod epilogue;
mod implicit;
pub mod linear;
pub mod pool;
#[cfg(test)]
mod testing;
pub mod window;
mod winograd;

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
