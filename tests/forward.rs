//! pare's own forward pass against tract's, on every shipped model.

mod common;

use common::{mnist, shipped_models};
use pare_train::{forward, Mode};
use pare_verify::{max_abs_diff, TractModel};

#[test]
fn our_forward_pass_matches_tract_on_every_shipped_model() {
    let test = pare_data::load_dir(&mnist()).unwrap().test.head(256);
    for path in shipped_models() {
        let graph = pare_ir::import(&pare_onnx::read_model(&path).unwrap()).unwrap();
        let ours = forward(
            &graph,
            test.images.clone().into_dyn(),
            Mode::Eval,
            false,
            None,
        )
        .unwrap();
        let ours = ours
            .value(graph.outputs[0])
            .unwrap()
            .clone()
            .into_dimensionality::<ndarray::Ix2>()
            .unwrap();
        let theirs = TractModel::load(&path, &[256, 1, 28, 28])
            .unwrap()
            .run(test.images.view())
            .unwrap();
        let diff = max_abs_diff(&ours, &theirs);
        assert!(
            diff <= 1e-4,
            "{}: max |ours − tract| = {diff}",
            path.display()
        );
    }
}
