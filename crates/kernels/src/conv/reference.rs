//! The convolution's definition, the reference every way of computing one is tested against.

use super::geometry::ConvGeometry;
use crate::window::Window2d;

/// The convolution's definition, one multiply at a time in f64: NCHW `x`, OIHW `w`, bias `b`.
pub fn conv_reference(geo: &ConvGeometry, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let Window2d {
        h,
        w: wd,
        kh,
        kw,
        out,
        ..
    } = geo.window;
    let (rows, columns) = geo.window.axes();
    let (cg, mg) = (geo.c_in / geo.group, geo.c_out / geo.group);
    let mut y = Vec::with_capacity(geo.batch * geo.c_out * out.0 * out.1);
    for n in 0..geo.batch {
        for m in 0..geo.c_out {
            let g = m / mg;
            for oy in 0..out.0 {
                for ox in 0..out.1 {
                    let mut acc = b[m] as f64;
                    for c in 0..cg {
                        for i in 0..kh {
                            for j in 0..kw {
                                if let (Some(yy), Some(xx)) =
                                    (rows.input(oy, i), columns.input(ox, j))
                                {
                                    let xv = x[((n * geo.c_in + g * cg + c) * h + yy) * wd + xx];
                                    acc += w[((m * cg + c) * kh + i) * kw + j] as f64 * xv as f64;
                                }
                            }
                        }
                    }
                    y.push(acc as f32);
                }
            }
        }
    }
    y
}
