//! Checks on the paths a command writes to, made before any work so a mistake costs nothing.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Whether two paths name the same file, whether or not it exists yet (`./a.onnx` and
/// `dir/../a.onnx` are the same).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// Refuses an output path that names the input file (or, for a model with external data, its
/// data file).
pub fn refuse_overwrite(input: &Path, output: &Path) -> Result<()> {
    let same = same_file;
    let data = input.with_file_name(format!(
        "{}.data",
        input.file_name().unwrap_or_default().to_string_lossy()
    ));
    if same(input, output) || same(&data, output) {
        bail!(
            "{}: the output would overwrite the input; choose another -o path",
            output.display()
        );
    }
    Ok(())
}

/// Refuses a report path that would overwrite the input model or the output model.
pub fn refuse_report(input: &Path, output: &Path, report: &Path) -> Result<()> {
    refuse_overwrite(input, report)?;
    if same_file(report, output) {
        bail!(
            "--report {} is also the output model; give the report another path",
            report.display()
        );
    }
    Ok(())
}
