//! Shapes with symbolic dimensions (a batch size or image size left open by the exporter).

use std::fmt;

/// One dimension: a known size or a named symbol (ONNX `dim_param`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Dim {
    Known(usize),
    Sym(String),
}

impl Dim {
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(v) => Some(*v),
            Dim::Sym(_) => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(v) => write!(f, "{v}"),
            Dim::Sym(s) => write!(f, "{s}"),
        }
    }
}

/// A tensor shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// All dimensions, if every one is known.
    pub fn to_known(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::known).collect()
    }

    /// The number of elements in one sample: the product of every dimension after the first
    /// (the batch). None if one of them is symbolic.
    pub fn per_sample_len(&self) -> Option<usize> {
        self.0.iter().skip(1).map(Dim::known).product()
    }

    pub fn dim(&self, axis: usize) -> Option<&Dim> {
        self.0.get(axis)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Resolves a possibly negative axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}
