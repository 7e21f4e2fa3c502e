//! Where tract spends a model's time: every node of the optimised plan timed on its own over a
//! number of runs, and those times gathered under the ONNX nodes they came from.
//!
//! tract names the nodes it splits, fuses or rewrites after the ONNX node they came from, with a
//! suffix after a '.' (for example `conv1.matmatmul`), so a layer's time is the sum over the plan
//! nodes named after it. Time tract spent in nodes named after no layer is left out.

use crate::{Clock, TractModel, VerifyError};
use ndarray::ArrayView4;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::{eval, SimpleState};

/// One node of tract's optimised plan and its median time in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeTime {
    pub name: String,
    pub ms: f64,
}

impl TractModel {
    /// The median time of each node of the optimised plan, on `clock`, over `runs` runs of
    /// `images` after `warmup` untimed ones; nodes in plan order.
    pub fn node_times(
        &self,
        images: ArrayView4<f32>,
        warmup: usize,
        runs: usize,
        clock: Clock,
    ) -> Result<Vec<NodeTime>, VerifyError> {
        let run_err = |e: TractError| VerifyError::Run {
            path: self.path().into(),
            reason: format!("{e:#}"),
        };
        let input = self.input_tensor(images)?;
        let plan = self.plan();
        let model = plan.model();
        let mut state = SimpleState::new(plan).map_err(run_err)?;
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); model.nodes().len()];
        for run in 0..warmup + runs.max(1) {
            let timed = run >= warmup;
            state
                .run_plan_with_eval(
                    tvec!(input.clone().into()),
                    |ctx, op_state, node, inputs| {
                        let (out, ms) = clock.time(|| eval(ctx, op_state, node, inputs));
                        if timed {
                            samples[node.id].push(ms);
                        }
                        out
                    },
                )
                .map_err(run_err)?;
        }
        Ok(model
            .nodes()
            .iter()
            .zip(samples)
            .filter(|(_, s)| !s.is_empty())
            .map(|(node, s)| NodeTime {
                name: node.name.clone(),
                ms: median(s),
            })
            .collect())
    }
}

/// The time of each of `layers` (ONNX node names): the sum of the plan nodes named after it, its
/// name alone or followed by '.' and tract's suffix; None for a layer no plan node is named after
/// (tract fused it into another).
pub fn layer_times(nodes: &[NodeTime], layers: &[&str]) -> Vec<Option<f64>> {
    layers
        .iter()
        .map(|&layer| {
            let named = nodes.iter().filter(|n| {
                n.name == layer
                    || n.name
                        .strip_prefix(layer)
                        .is_some_and(|rest| rest.starts_with('.'))
            });
            named.fold(None, |sum, n| Some(sum.unwrap_or(0.0) + n.ms))
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn node(name: &str, ms: f64) -> NodeTime {
        NodeTime {
            name: name.into(),
            ms,
        }
    }

    #[test]
    fn a_layer_gathers_the_plan_nodes_named_after_it() {
        let nodes = [
            node("/conv1/Conv", 1.0),
            node("/conv1/Conv.pack", 0.5),
            node("/conv10/Conv", 4.0),
            node("/relu/Relu", 0.25),
        ];
        assert_eq!(
            layer_times(&nodes, &["/conv1/Conv", "/conv10/Conv", "/fc/Gemm"]),
            vec![Some(1.5), Some(4.0), None]
        );
    }

    #[test]
    fn every_weight_layer_of_lenet_is_found_in_tract_s_plan() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lenet5_opset17.onnx");
        let model = TractModel::load(&path, &[1, 1, 28, 28]).unwrap();
        let image = ndarray::Array4::from_elem((1, 1, 28, 28), 0.5f32);
        let nodes = model
            .node_times(image.view(), 1, 3, Clock::ThreadCpu)
            .unwrap();
        assert!(nodes.iter().all(|n| n.ms.is_finite() && n.ms >= 0.0));
        let layers = [
            "/conv1/Conv",
            "/conv2/Conv",
            "/fc1/Gemm",
            "/fc2/Gemm",
            "/fc3/Gemm",
        ];
        let times = layer_times(&nodes, &layers);
        assert!(times.iter().all(Option::is_some), "{nodes:?}");
    }
}
