//! Numerical kernels, one family per file, each with its forward, backward and reference tests.
//! Kernels work on ndarray values and know nothing of the graph.

pub mod batchnorm;
pub mod conv;
pub mod elementwise;
mod implicit;
pub mod linear;
pub mod pool;
#[cfg(test)]
mod testing;
pub mod window;
mod winograd;
