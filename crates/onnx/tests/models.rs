//! Every shipped model decodes, encodes and decodes again to an equal message: no field is lost.

use std::path::Path;

#[test]
fn decode_encode_decode_loses_no_field() {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut seen = 0;
    for entry in std::fs::read_dir(&models).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let first = pare_onnx::decode(&bytes, &path).unwrap();
        let encoded = pare_onnx::encode(&first);
        let second = pare_onnx::decode(&encoded, &path).unwrap();
        assert_eq!(first, second, "{}", path.display());
        // prost drops unknown fields; equal lengths show none were in the file.
        assert_eq!(
            encoded.len(),
            bytes.len(),
            "{}: fields the schema does not know",
            path.display()
        );
        seen += 1;
    }
    assert!(
        seen >= 6,
        "expected the shipped models in {}",
        models.display()
    );
}

#[test]
fn external_data_is_inlined_from_the_model_folder() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/lenet5_dynamo_extdata_opset18.onnx");
    let model = pare_onnx::read_model(&path).unwrap();
    let graph = model.graph.unwrap();
    assert!(graph
        .initializer
        .iter()
        .all(|t| t.external_data.is_empty() && t.raw_data.is_some()));
    let float_bytes: usize = graph
        .initializer
        .iter()
        .filter(|t| t.data_type == Some(1))
        .map(|t| t.raw_data.as_ref().unwrap().len())
        .sum();
    assert_eq!(
        float_bytes,
        61_706 * 4,
        "LeNet-5's 61,706 float32 parameters"
    );
}
