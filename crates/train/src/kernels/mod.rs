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

/// `a` in standard (row-major) layout, copied only when it is not in it already.
pub fn into_standard<D: ndarray::Dimension>(a: ndarray::Array<f32, D>) -> ndarray::Array<f32, D> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}
