//! The importance of a convolution's kernels: for filter j and its input channel c, the Frobenius
//! norm of |K_jc| convolved with |x_c| alone (same stride, padding and dilation), the map that
//! kernel adds to the filter's output.
//!
//! All kernels of a layer go through pare's convolution in one call: a grouped convolution with one
//! group per input channel, whose group i holds |K_jc| of every filter j that reads channel i, so
//! each output plane is one (filter, kernel) map.

use ndarray::{Array2, Array4, ArrayView4, Axis};
use pare_kernels::conv::{self, ConvGeometry};
use pare_kernels::epilogue::Epilogue;
use pare_kernels::window::Window2d;

/// The per-kernel maps of one layer over inputs of one spatial size.
pub(super) struct KernelMaps {
    window: Window2d,
    c_in: usize,
    /// Filters reading each input channel (the layer's filters per group).
    per_channel: usize,
    /// Input channels per group of the layer.
    group_width: usize,
    /// |K| rearranged: output channel i·per_channel + t of the grouped convolution is filter
    /// (i / group_width)·per_channel + t's kernel over its input i % group_width.
    weights: Vec<f32>,
}

/// Output values (floats) one grouped call may produce: bounds the memory of a chunk of samples.
const MAX_OUTPUT: usize = 1 << 22;

impl KernelMaps {
    /// For a Conv with weight `w` [M, C/g, kh, kw] and `group` groups over `c_in` channels of
    /// inputs whose planes `window` slides over.
    pub fn new(w: ArrayView4<f32>, group: usize, c_in: usize, window: Window2d) -> Self {
        let (filters, group_width, kh, kw) = w.dim();
        let per_channel = filters / group;
        let mut weights = Vec::with_capacity(c_in * per_channel * kh * kw);
        for i in 0..c_in {
            for t in 0..per_channel {
                let j = (i / group_width) * per_channel + t;
                let kernel = w.index_axis(Axis(0), j);
                let kernel = kernel.index_axis(Axis(0), i % group_width);
                weights.extend(kernel.iter().map(|v| v.abs()));
            }
        }
        KernelMaps {
            window,
            c_in,
            per_channel,
            group_width,
            weights,
        }
    }

    /// √(ho·wo): the Frobenius norm of a map of ones, what a bias adds to the filter's output.
    pub fn plane_root(&self) -> f64 {
        ((self.window.out.0 * self.window.out.1) as f64).sqrt()
    }

    /// (filter, input channel within its group) of output plane `o` of the grouped convolution.
    fn connection(&self, o: usize) -> (usize, usize) {
        let (i, t) = (o / self.per_channel, o % self.per_channel);
        (
            (i / self.group_width) * self.per_channel + t,
            i % self.group_width,
        )
    }

    /// Adds, for every sample of `x_abs` (|x|, NCHW), the Frobenius norm of each kernel's map to
    /// `sums` [filters, group width].
    pub fn add_norms(&self, x_abs: ArrayView4<f32>, sums: &mut Array2<f64>) {
        let plane = self.window.out.0 * self.window.out.1;
        let per_sample = (self.c_in * self.per_channel * plane).max(1);
        let chunk = (MAX_OUTPUT / per_sample).max(1);
        for samples in x_abs.axis_chunks_iter(Axis(0), chunk) {
            let maps = self.maps(samples);
            for sample in maps.outer_iter() {
                for (o, map) in sample.outer_iter().enumerate() {
                    let norm = map.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    sums[self.connection(o)] += norm;
                }
            }
        }
    }

    /// Every kernel's map for each sample of `x_abs`: [N, C·filters per channel, ho, wo].
    fn maps(&self, x_abs: ArrayView4<f32>) -> Array4<f32> {
        let geo = ConvGeometry {
            batch: x_abs.dim().0,
            c_in: self.c_in,
            c_out: self.c_in * self.per_channel,
            group: self.c_in,
            window: self.window,
        };
        conv::forward(&geo, x_abs, &self.weights, None, Epilogue::default(), false).y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 + seed) * 0.7123).sin()).collect()
    }

    /// The map of kernel (j, c) over sample n by the definition, as a naive loop.
    fn naive_norm(
        w: &Array4<f32>,
        x: &Array4<f32>,
        window: &Window2d,
        group: usize,
        n: usize,
        j: usize,
        c: usize,
    ) -> f64 {
        let (filters, width, kh, kw) = w.dim();
        let i = (j / (filters / group)) * width + c;
        let mut sum = 0.0f64;
        for oy in 0..window.out.0 {
            for ox in 0..window.out.1 {
                let mut v = 0.0f64;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let y = (oy * window.stride.0 + ky * window.dilation.0) as isize
                            - window.pad.0 as isize;
                        let xx = (ox * window.stride.1 + kx * window.dilation.1) as isize
                            - window.pad.1 as isize;
                        if y < 0 || xx < 0 || y >= window.h as isize || xx >= window.w as isize {
                            continue;
                        }
                        v += (w[[j, c, ky, kx]].abs() * x[[n, i, y as usize, xx as usize]].abs())
                            as f64;
                    }
                }
                sum += v * v;
            }
        }
        sum.sqrt()
    }

    #[test]
    fn kernel_norms_match_a_naive_loop_for_plain_and_grouped_strided_convolutions() {
        for (group, filters, stride) in [(1, 3, 1), (2, 4, 2)] {
            let c_in = 4;
            let w = Array4::from_shape_vec(
                (filters, c_in / group, 3, 3),
                wave(filters * 36 / group, 1.0),
            )
            .unwrap();
            let x = Array4::from_shape_vec((2, c_in, 5, 6), wave(240, 2.0)).unwrap();
            let window = Window2d {
                h: 5,
                w: 6,
                kh: 3,
                kw: 3,
                stride: (stride, stride),
                dilation: (1, 1),
                pad: (1, 1),
                out: ((5 + 2 - 3) / stride + 1, (6 + 2 - 3) / stride + 1),
            };
            let maps = KernelMaps::new(w.view(), group, c_in, window);
            let mut sums = Array2::zeros((filters, c_in / group));
            maps.add_norms(x.mapv(f32::abs).view(), &mut sums);
            for j in 0..filters {
                for c in 0..c_in / group {
                    let want: f64 = (0..2)
                        .map(|n| naive_norm(&w, &x, &window, group, n, j, c))
                        .sum();
                    let got = sums[[j, c]];
                    assert!(
                        (got - want).abs() <= 1e-4 * want.max(1.0),
                        "group {group}, kernel ({j}, {c}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
