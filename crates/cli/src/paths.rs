//! Checks on the paths a command writes to, made before any training so a mistake costs nothing:
//! nothing a command writes may replace a file it reads (the model, the model's external data, a
//! file of a dataset).

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `p` with every link and `..` resolved, whether or not the file exists yet (`./a.onnx` and
/// `dir/../a.onnx` resolve alike).
fn resolve(p: &Path) -> Option<PathBuf> {
    if let Ok(c) = p.canonicalize() {
        return Some(c);
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(p.file_name()?))
}

/// Whether two paths name the same file, whether or not it exists yet.
pub fn same_file(a: &Path, b: &Path) -> bool {
    matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// What a command reads, so that nothing it writes replaces any of it.
#[derive(Default)]
pub struct Inputs {
    /// What each input is, for the message, and its path: a file, or a dataset's folder.
    paths: Vec<(String, PathBuf)>,
}

impl Inputs {
    /// Records `path` (a file, or a folder whose files are all inputs) as `what`.
    pub fn add(&mut self, what: impl Into<String>, path: &Path) {
        self.paths.push((what.into(), path.to_path_buf()));
    }

    /// Refuses `output` (given by `flag`) when it names an input file, or an existing file inside
    /// an input folder.
    pub fn refuse_overwrite(&self, flag: &str, output: &Path) -> Result<()> {
        let Some(out) = resolve(output) else {
            return Ok(());
        };
        for (what, path) in &self.paths {
            let Some(input) = resolve(path) else {
                continue;
            };
            let inside_folder = input.is_dir() && out.starts_with(&input) && out.is_file();
            if out == input || inside_folder {
                bail!(
                    "{flag} {}: it would overwrite {what} ({}); choose another path",
                    output.display(),
                    path.display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_may_not_replace_an_input_file_or_a_file_of_an_input_folder() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.onnx");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&model, b"m").unwrap();
        std::fs::write(data.join("train.npz"), b"d").unwrap();
        let mut inputs = Inputs::default();
        inputs.add("the model", &model);
        inputs.add("the --data dataset", &data);
        let refused = |p: PathBuf| inputs.refuse_overwrite("-o", &p).unwrap_err().to_string();
        let e = refused(dir.path().join("data/../m.onnx"));
        assert!(e.contains("the model"), "{e}");
        let e = refused(data.join("train.npz"));
        assert!(e.contains("--data"), "{e}");
        inputs
            .refuse_overwrite("-o", &dir.path().join("small.onnx"))
            .unwrap();
        // A new file in the dataset's folder replaces nothing.
        inputs
            .refuse_overwrite("-o", &data.join("new.onnx"))
            .unwrap();
    }
}
