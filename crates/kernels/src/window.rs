//! The sliding window shared by convolution and pooling, and its index arithmetic: which input
//! position each output position reads through each kernel tap. No data, no kernels.

use std::ops::Range;

/// An axis of `len` inputs and `out` outputs; output o's tap k reads input
/// `o·stride + k·dilation − pad`, which may fall in the padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct WindowAxis {
    pub len: usize,
    pub out: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad: usize,
}

/// A 2-d sliding window (convolution or pooling) over an (h, w) plane: kernel size, strides,
/// dilations, leading pads, and the output size, which carries the trailing padding and ceil
/// mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window2d {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// (top, left) padding; the bottom/right padding only shows in `out`.
    pub pad: (usize, usize),
    pub out: (usize, usize),
}

impl Window2d {
    /// The window's (row, column) axes.
    pub(crate) fn axes(&self) -> (WindowAxis, WindowAxis) {
        let axis = |len, out, stride, dilation, pad| WindowAxis {
            len,
            out,
            stride,
            dilation,
            pad,
        };
        (
            axis(
                self.h,
                self.out.0,
                self.stride.0,
                self.dilation.0,
                self.pad.0,
            ),
            axis(
                self.w,
                self.out.1,
                self.stride.1,
                self.dilation.1,
                self.pad.1,
            ),
        )
    }
}

impl WindowAxis {
    /// The input read by output `o` through tap `k`, if it is inside the input.
    pub fn input(&self, o: usize, k: usize) -> Option<usize> {
        let i = (o * self.stride + k * self.dilation) as isize - self.pad as isize;
        (0..self.len as isize).contains(&i).then_some(i as usize)
    }

    /// The outputs whose tap `k` reads inside the input, and the offset `k·dilation − pad` such
    /// that output o reads input `o·stride + offset`.
    pub fn inside(&self, k: usize) -> (Range<usize>, isize) {
        let s = self.stride as isize;
        let off = (k * self.dilation) as isize - self.pad as isize;
        // First o with o·s + off ≥ 0, last with o·s + off ≤ len − 1.
        let lo = if off < 0 { (-off + s - 1) / s } else { 0 };
        let last = self.len as isize - 1 - off;
        let hi = if last < 0 { 0 } else { last / s + 1 };
        let out = self.out as isize;
        let lo = lo.min(out);
        (lo as usize..hi.clamp(lo, out) as usize, off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_agrees_with_input_for_every_tap_and_output() {
        for (len, stride, dilation, pad, k) in [(7, 1, 1, 1, 3), (6, 2, 2, 3, 3), (5, 3, 1, 4, 2)] {
            let out = (len + 2 * pad - (dilation * (k - 1) + 1)) / stride + 1;
            let axis = WindowAxis {
                len,
                out,
                stride,
                dilation,
                pad,
            };
            for tap in 0..k {
                let (range, off) = axis.inside(tap);
                for o in 0..out {
                    let want = axis.input(o, tap);
                    let got = range
                        .contains(&o)
                        .then(|| (o as isize * stride as isize + off) as usize);
                    assert_eq!(got, want, "{axis:?} tap {tap} output {o}");
                }
            }
        }
    }
}
