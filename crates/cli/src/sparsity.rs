//! What exact zeros in a model's weights buy (connection masks leave them; ONNX has no standard
//! sparse convolution, so files stay dense): nonzero parameters, the gzip size of the file, and
//! each weight layer's nonzero share.

use crate::table;
use flate2::write::GzEncoder;
use pare_ir::Graph;
use pare_prune::LayerSparsity;
use serde::Serialize;
use std::io::Write;

/// A model's nonzero parameters and the size of its file gzipped.
#[derive(Clone, Copy, Serialize)]
pub struct Zeros {
    pub nonzero_params: u64,
    pub gzip_bytes: u64,
}

impl Zeros {
    /// The figures of `graph`, whose encoded file is `bytes`.
    pub fn of(graph: &Graph, bytes: &[u8]) -> Zeros {
        Zeros {
            nonzero_params: pare_prune::nonzero_params(graph),
            gzip_bytes: gzip_len(bytes),
        }
    }
}

/// The length of `bytes` gzipped at the default level.
fn gzip_len(bytes: &[u8]) -> u64 {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory").len() as u64
}

/// The table rows for two models' zeros: nonzero parameters and the compression (original
/// parameters over nonzero ones), then the gzip sizes.
pub fn rows(
    original_params: u64,
    original: &Zeros,
    compressed: &Zeros,
) -> (Vec<Vec<String>>, Vec<String>) {
    let ratio = |a: u64, b: u64| format!("{:.2}x", b as f64 / a.max(1) as f64);
    let params = vec![
        vec![
            "nonzero params".into(),
            table::thousands(original.nonzero_params),
            table::thousands(compressed.nonzero_params),
            ratio(original.nonzero_params, compressed.nonzero_params),
        ],
        vec![
            "compression (params / nonzero)".into(),
            String::new(),
            String::new(),
            format!(
                "{:.2}x",
                original_params as f64 / compressed.nonzero_params.max(1) as f64
            ),
        ],
    ];
    let gzip = vec![
        "file size gzipped (bytes)".into(),
        table::thousands(original.gzip_bytes),
        table::thousands(compressed.gzip_bytes),
        ratio(original.gzip_bytes, compressed.gzip_bytes),
    ];
    (params, gzip)
}

/// Whether any weight layer has an exact zero.
pub fn has_zeros(layers: &[LayerSparsity]) -> bool {
    layers.iter().any(|l| l.nonzero < l.params)
}

/// A nonzero share as a percentage for tables.
pub fn share(layer: &LayerSparsity) -> String {
    format!("{:.1}%", 100.0 * layer.nonzero_share())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_gzip_smaller_than_noise() {
        let zeros = vec![0u8; 4096];
        let mut rng = pare_kernels::rng::SplitMix64::new(1);
        let noise: Vec<u8> = (0..4096).map(|_| rng.next_u64() as u8).collect();
        assert!(gzip_len(&zeros) < 100);
        assert!(gzip_len(&noise) > 3000);
    }
}
