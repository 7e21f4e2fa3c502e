//! What a producing kernel (BatchNorm, Conv) does to its output while each plane is still in
//! cache: the activation that follows it in the graph, then the max pool that follows that.
//! The executor decides when the graph allows it; kernels only apply it. With a max pool, the
//! producer's full-size output never reaches memory: only the pooled planes and the index each
//! pooled value came from do. It can also sum each plane (Σ and Σ²) for a BatchNorm that reads
//! the output next, so BatchNorm need not read it once more for its statistics.

use crate::elementwise::Activation;
use crate::pool::max_plane;
use crate::scratch::with_buffer;
use crate::sums::sum_and_squares;
use crate::window::Window2d;
use rayon::prelude::*;
use std::cell::RefCell;

/// The nodes after a producer that its kernel runs; the default runs none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Epilogue {
    pub activation: Option<Activation>,
    /// A max pool over each output plane, after the activation.
    pub max_pool: Option<Window2d>,
    /// Whether to sum each output plane (`sum_and_squares`), without a max pool only.
    pub plane_sums: bool,
}

/// Where a producing kernel and its epilogue write.
pub(crate) struct Outputs<'a> {
    /// The output values (pooled with a max pool).
    pub y: &'a mut [f32],
    /// With a max pool, the flat index in its plane each pooled value came from.
    pub argmax: Option<&'a mut [u32]>,
    /// With `plane_sums`, Σ and Σ² of each output plane.
    pub plane_sums: Option<&'a mut [(f64, f64)]>,
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

thread_local! {
    /// Each thread's produced block, when a max pool takes it before it reaches memory.
    static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Epilogue {
    /// Runs `produce(block, out)` for each block of whole output planes (blocks in parallel),
    /// `out` holding `out.len() / plane` planes of `plane` values that it must write in full,
    /// then the epilogue on them. Block `b` holds planes `b · block_planes` on (the last block
    /// may hold fewer). Without a max pool `out` is the block's part of `y`, summed per plane
    /// into `plane_sums` when given; with one it is a per-thread buffer whose planes are pooled
    /// into `y`, and their winners into `argmax`.
    pub(crate) fn produce_blocks(
        &self,
        out: Outputs,
        (block_planes, plane): (usize, usize),
        produce: impl Fn(usize, &mut [f32]) + Sync,
    ) {
        let out_plane = self.plane_len(plane).max(1);
        let out_block = (block_planes * out_plane).max(1);
        let Outputs {
            y,
            argmax,
            plane_sums,
        } = out;
        match (self.max_pool, argmax) {
            (Some(_), Some(argmax)) => y
                .par_chunks_mut(out_block)
                .zip(argmax.par_chunks_mut(out_block))
                .enumerate()
                .for_each(|(b, (yb, ab))| {
                    let planes = yb.len() / out_plane;
                    with_buffer(&BLOCK, planes * plane, |block| {
                        produce(b, block);
                        for ((p, yp), ap) in block
                            .chunks_exact_mut(plane)
                            .zip(yb.chunks_exact_mut(out_plane))
                            .zip(ab.chunks_exact_mut(out_plane))
                        {
                            self.pool(p, yp, ap);
                        }
                    });
                }),
            (None, _) => {
                let finish = |b: usize, yb: &mut [f32], sums: &mut [(f64, f64)]| {
                    produce(b, yb);
                    self.activate(yb);
                    for (s, p) in sums.iter_mut().zip(yb.chunks_exact(plane.max(1))) {
                        *s = sum_and_squares(p);
                    }
                };
                let blocks = y.par_chunks_mut(out_block);
                match plane_sums {
                    Some(sums) => blocks
                        .zip(sums.par_chunks_mut(block_planes.max(1)))
                        .enumerate()
                        .for_each(|(b, (yb, sb))| finish(b, yb, sb)),
                    None => blocks
                        .enumerate()
                        .for_each(|(b, yb)| finish(b, yb, &mut [])),
                }
            }
            (Some(_), None) => unreachable!("a max pool epilogue writes its winners"),
        }
    }
}
