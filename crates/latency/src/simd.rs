//! The vector width tract's f32 matrix kernels use on this CPU: the one place that asks the CPU.
//!
//! tract-linalg picks a register tile per product by how little of it is padding; its f32 tiles
//! are a whole number of vector registers tall. With AVX-512 they are 16 rows (one zmm) or a
//! multiple of 16 (its preferred tile is 16×12); with AVX/FMA 8 (one ymm: 8×8) or 16, 24, 32, 40
//! (two to five ymm, 16×6 preferred); with 128-bit vectors (NEON, SSE) 4 lanes. A channel count
//! that is a multiple of this width fills every tile it touches.

use std::sync::OnceLock;

/// f32 lanes in one vector register of the kernels tract uses here: 16, 8 or 4. Detected once.
pub fn vector_width() -> usize {
    static WIDTH: OnceLock<usize> = OnceLock::new();
    *WIDTH.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> usize {
    if std::is_x86_feature_detected!("avx512f") {
        16
    } else if std::is_x86_feature_detected!("avx") {
        8
    } else {
        4
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> usize {
    4
}
