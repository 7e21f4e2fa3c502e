//! Re-estimating BatchNorm's running statistics, against the statistics computed by hand.

use ndarray::{Array4, ArrayD};
use pare_data::Dataset;
use pare_ir::{Graph, Tensor, ValueSource};
use pare_onnx::{attr, GraphBuilder};
use pare_train::{reestimate_batchnorm, BatchStream};

/// x[N,2,3,3] → BatchNorm (running mean 5, variance 7: wrong on purpose) → y.
fn graph() -> Graph {
    let mut b = GraphBuilder::new("bn", 17);
    b.input("x", [4i64, 2, 3, 3]);
    b.initializer(attr::tensor_f32("g", &[2], vec![1.0, 2.0]));
    b.initializer(attr::tensor_f32("beta", &[2], vec![0.0, 0.5]));
    b.initializer(attr::tensor_f32("mean", &[2], vec![5.0; 2]));
    b.initializer(attr::tensor_f32("var", &[2], vec![7.0; 2]));
    b.node(
        "BatchNormalization",
        &["x", "g", "beta", "mean", "var"],
        &["y"],
        vec![],
    );
    b.output("y", [4i64, 2, 3, 3]);
    pare_ir::import(&b.build()).unwrap()
}

fn initializer(graph: &Graph, name: &str) -> ArrayD<f32> {
    match &graph.value(graph.find_value(name).unwrap()).source {
        ValueSource::Initializer(Tensor::F32(t)) => t.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn running_statistics_become_the_mean_of_the_batch_statistics() {
    let images = Array4::from_shape_fn((8, 2, 3, 3), |(n, c, h, w)| {
        ((n * 18 + c * 9 + h * 3 + w) as f32 * 0.37).sin() * (1.0 + c as f32) + n as f32 * 0.1
    });
    let data = Dataset::new(images, vec![0; 8]);
    let mut graph = graph();
    let mut stream = BatchStream::new(&data, 4, 3);
    reestimate_batchnorm(&mut graph, &mut stream, 2).unwrap();

    // By hand: the same two batches, per channel mean and unbiased variance, averaged.
    let mut again = BatchStream::new(&data, 4, 3);
    let (mut mean, mut var) = ([0.0f64; 2], [0.0f64; 2]);
    for _ in 0..2 {
        let batch = again.next_batch().images;
        for c in 0..2 {
            let values: Vec<f64> = batch
                .index_axis(ndarray::Axis(1), c)
                .iter()
                .map(|&v| v as f64)
                .collect();
            let m = values.iter().sum::<f64>() / values.len() as f64;
            let v = values.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
            mean[c] += m / 2.0;
            var[c] += v / 2.0;
        }
    }
    let (got_mean, got_var) = (initializer(&graph, "mean"), initializer(&graph, "var"));
    for c in 0..2 {
        assert!(
            (got_mean[c] as f64 - mean[c]).abs() < 1e-5,
            "{got_mean} {mean:?}"
        );
        assert!(
            (got_var[c] as f64 - var[c]).abs() < 1e-5,
            "{got_var} {var:?}"
        );
    }
    // The scale and shift are weights: untouched.
    assert_eq!(initializer(&graph, "g").as_slice().unwrap(), &[1.0, 2.0]);
}
