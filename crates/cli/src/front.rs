//! The three models of `--strategy es`'s front: each verified by tract on the test split and
//! gated by `--max-drop` like the output, and with `--front-dir` written as heavy.onnx, knee.onnx
//! and light.onnx beside front.json (every individual of the search) and front.svg.

use crate::{front_plot, paths};
use anyhow::{Context, Result};
use pare_data::Dataset;
use pare_prune::{Front, Role};
use pare_verify::{Accuracy, Comparison, Source, Subject};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One pick as tract measured it.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedPick {
    pub role: Role,
    pub params: u64,
    pub macs: u64,
    pub validation_accuracy: f64,
    pub test_accuracy: f64,
    /// Where it was written, when it was (within --max-drop, or --force).
    pub file: Option<PathBuf>,
}

/// front.json: the search and the picks as verified.
#[derive(Serialize)]
struct FrontFile<'a> {
    #[serde(flatten)]
    front: &'a Front,
    verified: &'a [VerifiedPick],
}

/// Checks, before any training, that no file `--front-dir DIR` would write is one of `inputs`.
pub fn check_dir(inputs: &paths::Inputs, dir: &Path) -> Result<()> {
    let models = Role::ALL.map(|r| format!("{}.onnx", r.name()));
    for name in models
        .iter()
        .map(String::as_str)
        .chain(["front.json", "front.svg"])
    {
        inputs.refuse_overwrite("--front-dir", &dir.join(name))?;
    }
    Ok(())
}

/// Verifies every pick from its encoded bytes against `before` (the original's test accuracy);
/// with `dir`, writes those within `max_drop` (all with `force`).
#[allow(clippy::too_many_arguments)]
pub fn verify(
    front: &Front,
    before: Accuracy,
    test_shape: &[usize],
    data: &Path,
    test: &Dataset,
    dir: Option<&Path>,
    max_drop: f64,
    force: bool,
) -> Result<Vec<VerifiedPick>> {
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the --front-dir folder", dir.display()))?;
    }
    let mut verified = Vec::new();
    for pick in &front.picks {
        let path = dir
            .unwrap_or(Path::new("."))
            .join(format!("{}.onnx", pick.role.name()));
        let bytes = pare_onnx::encode(&pare_ir::export(&pick.graph));
        let subject = Subject::load(
            Source::Bytes {
                path: &path,
                bytes: &bytes,
            },
            test_shape,
        )?;
        let after = subject.test_accuracy(data, test)?;
        let write = dir.is_some() && (force || Comparison { before, after }.within(max_drop));
        if write {
            pare_onnx::write_atomic(&path, &bytes)?;
        }
        verified.push(VerifiedPick {
            role: pick.role,
            params: pick.cost.params,
            macs: pick.cost.macs,
            validation_accuracy: pick.validation_accuracy,
            test_accuracy: after.percent(),
            file: write.then_some(path),
        });
    }
    Ok(verified)
}

/// Writes front.json and front.svg into `dir`.
pub fn write(dir: &Path, front: &Front, verified: &[VerifiedPick]) -> Result<()> {
    let json = serde_json::to_string_pretty(&FrontFile { front, verified })?;
    pare_onnx::write_atomic(&dir.join("front.json"), json.as_bytes())?;
    let svg = front_plot::render(front)?;
    pare_onnx::write_atomic(&dir.join("front.svg"), svg.as_bytes())?;
    Ok(())
}
