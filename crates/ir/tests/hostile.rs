//! Malformed models are refused at import with the node or tensor at fault and what to do, never
//! turned into Opaque nodes that a runtime later panics on, never a panic here.

use pare_ir::import;
use pare_onnx::{DimSpec, GraphBuilder};

/// A chain of 100,000 Relu nodes listed last to first: sorting must not be quadratic (this took
/// minutes before). No time is asserted; the test completing is the check.
#[test]
fn a_large_unsorted_graph_sorts() {
    let n = 100_000;
    let mut b = GraphBuilder::new("t", 17);
    b.input("v0", [DimSpec::from("N"), 4.into()])
        .output(&format!("v{n}"), [DimSpec::from("N"), 4.into()]);
    for i in (0..n).rev() {
        b.node(
            "Relu",
            &[&format!("v{i}")],
            &[&format!("v{}", i + 1)],
            vec![],
        );
    }
    let graph = import(&b.build()).unwrap();
    assert_eq!(graph.nodes.len(), n);
    assert_eq!(graph.nodes[0].name, format!("Relu_{}", n - 1));
}
