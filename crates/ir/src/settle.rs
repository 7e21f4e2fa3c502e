//! Bringing a graph to its settled form once its shapes are as known as they will be: shapes
//! inferred, shape and constant subgraphs folded, exporter idioms rewritten into the ops pare
//! models. Import does this; so does fixing an open input shape, since most folds and rewrites
//! need concrete shapes.

use crate::graph::Graph;
use crate::shape::{Dim, Shape};
use crate::{fold, fold_const, idioms, infer, IrError};

/// Infers shapes, folds what became constant and rewrites idioms, twice: a fold or a rewrite can
/// make more foldable (a Conv typed again once its computed weight folded has an output shape, so
/// the Squeeze after it can become a Reshape). Until the last pass an unknown input shape is not
/// an error, since a later fold may make it known; the last pass is strict.
pub(crate) fn settle(graph: &mut Graph) -> Result<(), IrError> {
    for _ in 0..2 {
        fold_const::fold_constants(graph)?;
        infer::infer_shapes_lenient(graph)?;
        fold::fold_shape_subgraphs(graph)?;
        fold_const::fold_constants(graph)?;
        infer::infer_shapes_lenient(graph)?;
        idioms::rewrite(graph)?;
    }
    infer::infer_shapes(graph)
}

/// True if the graph's first input has an open dimension other than the batch (an exporter
/// left the image size free, as Paddle and TensorFlow converters do).
pub fn input_shape_is_open(graph: &Graph) -> bool {
    let Some(&input) = graph.inputs.first() else {
        return false;
    };
    graph
        .value(input)
        .shape
        .as_ref()
        .is_none_or(|s| s.0.iter().skip(1).any(|d| d.known().is_none()))
}

/// Fixes every dimension but the batch of the graph's first input to `sample` (e.g. `[3, 48,
/// 192]`), then re-infers and folds, so shapes, groups and costs are known and the exported model
/// still takes any batch size. A dimension the model already fixes must agree.
pub fn fix_input_shape(graph: &mut Graph, sample: &[usize]) -> Result<(), IrError> {
    let Some(&input) = graph.inputs.first() else {
        return Err(IrError::InputShape {
            problem: "the graph has no input".into(),
        });
    };
    let value = graph.value(input);
    let declared = value.shape.clone();
    let batch = match &declared {
        Some(s) if s.rank() != sample.len() + 1 => {
            return Err(IrError::InputShape {
                problem: format!(
                    "input '{}' has shape {s}, so it takes a sample of rank {}, not {sample:?}",
                    value.name,
                    s.rank().saturating_sub(1)
                ),
            })
        }
        Some(s) => s.0[0].clone(),
        None => Dim::Sym("N".into()),
    };
    if let Some(s) = &declared {
        for (d, &want) in s.0[1..].iter().zip(sample) {
            if matches!(d, Dim::Known(k) if *k != want) {
                return Err(IrError::InputShape {
                    problem: format!(
                        "input '{}' has shape {s}, which does not take a sample of {sample:?}",
                        value.name
                    ),
                });
            }
        }
    }
    let mut dims = vec![batch];
    dims.extend(sample.iter().map(|&d| Dim::Known(d)));
    graph.value_mut(input).shape = Some(Shape(dims));
    settle(graph)
}
