//! `cargo xtask bench kernels [layer]`: milliseconds and GFLOP/s of pare-kernels' convolution
//! kernels on the VGG-style net's and LeNet-5's layers (batch 64, two threads), forward and
//! backward apart; of its GEMM beside matrixmultiply's on the convolutions' products (one
//! thread); and of its max pools, BatchNorms and ReLUs. With a layer name, only the layers whose
//! label contains it, for profiling one.

use anyhow::Result;
use ndarray::{Array4, ArrayD};
use pare_kernels::batchnorm;
use pare_kernels::conv::{self, ConvGeometry};
use pare_kernels::elementwise::Activation;
use pare_kernels::epilogue::Epilogue;
use pare_kernels::gemm::{self, Mat};
use pare_kernels::pool;
use pare_kernels::window::Window2d;
use std::time::Instant;

/// A convolution layer of the benchmarked nets: square input and kernel, stride 1.
struct Layer {
    label: &'static str,
    c_in: usize,
    c_out: usize,
    side: usize,
    kernel: usize,
    pad: usize,
}

impl Layer {
    fn geometry(&self) -> ConvGeometry {
        let out = self.side + 2 * self.pad + 1 - self.kernel;
        ConvGeometry {
            batch: BATCH,
            c_in: self.c_in,
            c_out: self.c_out,
            group: 1,
            window: Window2d {
                h: self.side,
                w: self.side,
                kh: self.kernel,
                kw: self.kernel,
                stride: (1, 1),
                dilation: (1, 1),
                pad: (self.pad, self.pad),
                out: (out, out),
            },
        }
    }
}

const fn layer(
    label: &'static str,
    (c_in, c_out): (usize, usize),
    side: usize,
    kernel: usize,
    pad: usize,
) -> Layer {
    Layer {
        label,
        c_in,
        c_out,
        side,
        kernel,
        pad,
    }
}

/// The VGG-style net's convolutions (3×3, padding 1), then LeNet-5's (5×5).
const LAYERS: [Layer; 6] = [
    layer("conv1 1→32, 28×28", (1, 32), 28, 3, 1),
    layer("conv2 32→64, 14×14", (32, 64), 14, 3, 1),
    layer("conv3 64→128, 7×7", (64, 128), 7, 3, 1),
    layer("conv4 128→128, 7×7", (128, 128), 7, 3, 1),
    layer("LeNet-5 conv1 1→6, 28×28", (1, 6), 28, 5, 2),
    layer("LeNet-5 conv2 6→16, 14×14", (6, 16), 14, 5, 0),
];
const BATCH: usize = 64;
const RUNS: usize = 21;

fn wave(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}

/// Median milliseconds of `RUNS` calls of `f`, after one untimed call.
fn median_ms(mut f: impl FnMut()) -> f64 {
    f();
    let times = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    crate::bench::median(times)
}

pub fn conv_speed(only: Option<&str>) -> Result<()> {
    println!(
        "convolution kernels, batch {BATCH}, {} threads, median of {RUNS} runs: ms (GFLOP/s)",
        rayon::current_num_threads()
    );
    println!();
    println!("| layer | forward | backward (weights, and inputs after the first layer) |");
    println!("|---|---|---|");
    for layer in LAYERS
        .iter()
        .filter(|l| only.is_none_or(|name| l.label.contains(name)))
    {
        let geo = layer.geometry();
        let (c_in, c_out, side) = (layer.c_in, layer.c_out, layer.side);
        let out = geo.window.out.0;
        let x = Array4::from_shape_vec(
            (BATCH, c_in, side, side),
            wave(BATCH * c_in * side * side, 1.0),
        )?;
        let w = wave(c_out * geo.patch_len(), 2.0);
        let dy = Array4::from_shape_vec(
            (BATCH, c_out, out, out),
            wave(BATCH * c_out * out * out, 3.0),
        )?;
        // As in training: the first layer's input needs no gradient.
        let want_dx = c_in > 1;
        let gflop = 2.0 * (BATCH * c_out * geo.patch_len() * out * out) as f64 / 1e9;
        let fwd = median_ms(|| {
            conv::forward(&geo, x.view(), &w, None, Epilogue::default(), false);
        });
        let bwd = median_ms(|| {
            conv::backward(&geo, x.view(), &w, dy.view(), want_dx);
        });
        let bwd_gflop = if want_dx { 2.0 * gflop } else { gflop };
        println!(
            "| {} | {fwd:.2} ({:.0}) | {bwd:.2} ({:.0}) |",
            layer.label,
            gflop / fwd * 1e3,
            bwd_gflop / bwd * 1e3
        );
    }
    if only.is_some() {
        return Ok(());
    }
    gemm_table();
    activation_table("2×2 max pool", |x| {
        let side = x.shape()[2];
        let geo = Window2d {
            h: side,
            w: side,
            kh: 2,
            kw: 2,
            stride: (2, 2),
            dilation: (1, 1),
            pad: (0, 0),
            out: (side / 2, side / 2),
        };
        let x = x.view().into_dimensionality()?;
        let (y, arg) = pool::max_forward(&geo, x);
        let fwd = median_ms(|| {
            pool::max_forward(&geo, x);
        });
        let bwd = median_ms(|| {
            pool::max_backward(&geo, &arg, y.view());
        });
        Ok((fwd, bwd))
    })?;
    activation_table("training-mode BatchNorm", |x| {
        let channels = x.shape()[1];
        let (scale, bias) = (vec![1.0; channels], vec![0.0; channels]);
        let (mean, var) = (vec![0.0; channels], vec![1.0; channels]);
        let plain = Epilogue::default();
        let bn = || {
            batchnorm::forward(
                x.view(),
                &scale,
                &bias,
                &mean,
                &var,
                1e-5,
                true,
                plain,
                None,
            )
        };
        let batchnorm::Normalised { y, stats, .. } = bn();
        let fwd = median_ms(|| {
            bn();
        });
        let bwd = in_place_ms(&y, |dy| {
            let stats = stats.as_ref();
            let dy = batchnorm::OutputGradient::Full(dy);
            batchnorm::backward(x.view(), dy, &scale, &mean, &var, 1e-5, stats).0
        });
        Ok((fwd, bwd))
    })?;
    activation_table("ReLU", |x| {
        let y = Activation::Relu.forward(&x.view());
        let fwd = median_ms(|| {
            Activation::Relu.forward(&x.view());
        });
        let bwd = in_place_ms(x, |mut dy| {
            Activation::Relu.backward_from_output(&y.view(), &mut dy);
            dy
        });
        Ok((fwd, bwd))
    })?;
    Ok(())
}

/// Median ms of `f` on a fresh copy of `dy`, which it overwrites as the executor lets backward
/// passes do; the time to refresh the copy is measured alone and taken off.
fn in_place_ms(dy: &ArrayD<f32>, f: impl Fn(ArrayD<f32>) -> ArrayD<f32>) -> f64 {
    let mut buffer = dy.clone();
    let refresh = median_ms(|| buffer.assign(dy));
    let total = median_ms(|| {
        buffer.assign(dy);
        buffer = f(std::mem::take(&mut buffer));
    });
    (total - refresh).max(0.0)
}

/// GFLOP/s of `pare_kernels::gemm` and of matrixmultiply's sgemm on one thread, on the products
/// the convolutions run: (label, m, k, n), all row-major.
fn gemm_table() {
    const PRODUCTS: [(&str, usize, usize, usize); 4] = [
        ("conv2 forward, 4 samples", 64, 288, 784),
        ("conv2 input gradient, 4 samples", 288, 64, 784),
        ("conv4 Winograd point", 256, 128, 128),
        ("conv2 as Winograd point", 1024, 32, 64),
    ];
    println!();
    println!("| GEMM m × k × n, one thread | pare-kernels GFLOP/s | matrixmultiply GFLOP/s |");
    println!("|---|---|---|");
    for (label, m, k, n) in PRODUCTS {
        let (a, b) = (wave(m * k, 1.0), wave(k * n, 2.0));
        let mut c = vec![0.0f32; m * n];
        let gflop = 2.0 * (m * k * n) as f64 / 1e9;
        let ours = median_ms(|| {
            gemm::gemm(1.0, Mat::new(&a, m, k), Mat::new(&b, k, n), 0.0, &mut c);
        });
        let theirs = median_ms(|| {
            let (a, b) = (Mat::new(&a, m, k), Mat::new(&b, k, n));
            gemm::matrixmultiply_gemm(1.0, a, b, 0.0, &mut c);
        });
        println!(
            "| {label}: {m} × {k} × {n} | {:.0} | {:.0} |",
            gflop / ours * 1e3,
            gflop / theirs * 1e3
        );
    }
}

/// A table of forward and backward milliseconds of `time` on the activations after each of the
/// VGG-style net's first three convolutions.
fn activation_table(title: &str, time: impl Fn(&ArrayD<f32>) -> Result<(f64, f64)>) -> Result<()> {
    println!();
    println!("| {title} | forward | backward |");
    println!("|---|---|---|");
    for (channels, side) in [(32, 28), (64, 14), (128, 7)] {
        let x = Array4::from_shape_vec(
            (BATCH, channels, side, side),
            wave(BATCH * channels * side * side, 1.0),
        )?
        .into_dyn();
        let (fwd, bwd) = time(&x)?;
        println!("| {channels}×{side}×{side} | {fwd:.2} | {bwd:.2} |");
    }
    Ok(())
}
