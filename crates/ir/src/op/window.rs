//! Window geometry shared by Conv and the pools: the attributes, their bounds, and the output
//! size and padding they give an input.

use super::attrs::{Attrs, Parsed};

/// How a Conv or pool pads its input.
#[derive(Debug, Clone, PartialEq)]
pub enum Padding {
    /// ONNX order: all begins, then all ends.
    Explicit(Vec<usize>),
    SameUpper,
    SameLower,
    Valid,
}

/// Window geometry shared by Conv and the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel_shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub pads: Padding,
    pub dilations: Vec<usize>,
}

impl Window {
    /// The extent of one kernel along axis `i`, dilations included; None if it overflows.
    fn span(&self, i: usize) -> Option<usize> {
        (self.kernel_shape[i] - 1)
            .checked_mul(self.dilations[i])?
            .checked_add(1)
    }

    /// Pads (begins then ends) for an input of these spatial sizes; None if the arithmetic
    /// overflows (absurd attributes).
    pub fn resolved_pads(&self, input: &[usize]) -> Option<Vec<usize>> {
        let n = self.kernel_shape.len();
        match &self.pads {
            Padding::Explicit(p) => Some(p.clone()),
            Padding::Valid => Some(vec![0; 2 * n]),
            Padding::SameUpper | Padding::SameLower => {
                let mut begins = vec![0; n];
                let mut ends = vec![0; n];
                for i in 0..n {
                    let out = input[i].div_ceil(self.strides[i]);
                    let total = out
                        .saturating_sub(1)
                        .checked_mul(self.strides[i])?
                        .checked_add(self.span(i)?)?
                        .saturating_sub(input[i]);
                    let small = total / 2;
                    let (b, e) = if self.pads == Padding::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    begins[i] = b;
                    ends[i] = e;
                }
                Some(begins.into_iter().chain(ends).collect())
            }
        }
    }

    /// Output spatial sizes for an input of these spatial sizes, or None if the window does not
    /// fit (or its arithmetic overflows).
    pub fn output_size(&self, input: &[usize], ceil_mode: bool) -> Option<Vec<usize>> {
        let n = self.kernel_shape.len();
        let pads = self.resolved_pads(input)?;
        (0..n)
            .map(|i| {
                let padded = input[i].checked_add(pads[i])?.checked_add(pads[i + n])?;
                let room = padded.checked_sub(self.span(i)?)?;
                let s = self.strides[i];
                let mut out = if ceil_mode {
                    room.div_ceil(s)
                } else {
                    room / s
                } + 1;
                // ONNX: with ceil_mode, a last window that starts in the end padding is dropped.
                if ceil_mode && (out - 1) * s >= input[i] + pads[i] {
                    out -= 1;
                }
                Some(out)
            })
            .collect()
    }
}

/// The largest kernel size, stride, dilation or pad pare accepts: no axis of a value may be longer
/// (see `MAX_VALUE_ELEMENTS`), so anything larger is an attribute gone wrong, and bounding it keeps
/// every window computation far from overflow.
pub const MAX_WINDOW_ATTR: i64 = 1 << 30;

/// An ints attribute of `n` elements, each from `min` to `MAX_WINDOW_ATTR`.
fn bounded(name: &str, v: &[i64], n: usize, min: i64) -> Parsed<Vec<usize>> {
    if v.len() != n {
        return Err(format!(
            "'{name}' has {} values {v:?}, the kernel needs {n}",
            v.len()
        ));
    }
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|_| (min..=MAX_WINDOW_ATTR).contains(&x))
                .ok_or_else(|| format!("'{name}' {v:?} holds {x}; each must be from {min} to 2^30"))
        })
        .collect()
}

/// Reads the window attributes; `kernel_shape` falls back to `weight_kernel` (Conv may omit it)
/// and, when both are known, must agree with it. None when the kernel is neither given nor known.
pub(super) fn window(
    a: &mut Attrs,
    weight_kernel: Option<&[usize]>,
    with_dilations: bool,
) -> Parsed<Option<Window>> {
    let kernel_shape = match (a.ints("kernel_shape")?, weight_kernel) {
        (Some(k), weight) => {
            let k = bounded("kernel_shape", &k, k.len(), 1)?;
            if k.is_empty() {
                return Err("'kernel_shape' is empty".into());
            }
            if let Some(w) = weight.filter(|w| *w != k.as_slice()) {
                return Err(format!(
                    "'kernel_shape' {k:?} disagrees with the weight's spatial shape {w:?}"
                ));
            }
            k
        }
        (None, Some(w)) if !w.is_empty() && !w.contains(&0) => w.to_vec(),
        (None, _) => return Ok(None),
    };
    let n = kernel_shape.len();
    let ones_or = |name: &str, v: Option<Vec<i64>>| -> Parsed<Vec<usize>> {
        v.map_or(Ok(vec![1; n]), |v| bounded(name, &v, n, 1))
    };
    let strides = ones_or("strides", a.ints("strides")?)?;
    let dilations = if with_dilations {
        ones_or("dilations", a.ints("dilations")?)?
    } else {
        vec![1; n]
    };
    let explicit = a.ints("pads")?;
    let pads = match a.string("auto_pad")?.as_deref() {
        None | Some("NOTSET") => Padding::Explicit(
            explicit.map_or(Ok(vec![0; 2 * n]), |p| bounded("pads", &p, 2 * n, 0))?,
        ),
        Some("SAME_UPPER") => Padding::SameUpper,
        Some("SAME_LOWER") => Padding::SameLower,
        Some("VALID") => Padding::Valid,
        Some(other) => {
            return Err(format!(
                "'auto_pad' is '{other}'; the spec allows NOTSET, SAME_UPPER, SAME_LOWER, VALID"
            ))
        }
    };
    Ok(Some(Window {
        kernel_shape,
        strides,
        pads,
        dilations,
    }))
}
