//! What a producing kernel (BatchNorm, Conv) does to its output while each plane is still in
//! cache: the activation that follows it in the graph, then the max pool that follows that.
//! The executor decides when the graph allows it; kernels only apply it. With a max pool, the
//! producer's full-size output never reaches memory: only the pooled planes and the index each
//! pooled value came from do.

use super::elementwise::Activation;
use super::pool::max_plane;
use super::window::Window2d;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Epilogue {
    pub activation: Option<Activation>,
    /// A max pool over each output plane, after the activation.
    pub max_pool: Option<Window2d>,
}

impl Epilogue {
    /// Values per output plane when the producer computes planes of `plane` values.
    pub fn plane_len(&self, plane: usize) -> usize {
        self.max_pool.map_or(plane, |p| p.out.0 * p.out.1)
    }

    /// Applies the activation to `values` in place.
    pub(crate) fn activate(&self, values: &mut [f32]) {
        if let Some(act) = self.activation {
            act.apply_in_place(values);
        }
    }

    /// Applies the activation to one produced `plane` in place, then pools it into `y` and the
    /// winning flat indices into `arg` (each `plane_len` values). Only with a max pool.
    pub(crate) fn pool(&self, plane: &mut [f32], y: &mut [f32], arg: &mut [u32]) {
        let pool = self.max_pool.as_ref().expect("a max pool epilogue");
        self.activate(plane);
        max_plane(pool, plane, y, arg);
    }
}
