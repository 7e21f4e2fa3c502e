//! The seed models and the folder cases read their external data from.
//!
//! The folder holds every external data file a seed names, plus the traps a mutated location may
//! point at: a file outside the folder (`../outside.bin`), a symbolic link out of it and a pipe.
//! pare must refuse all three without reading them.

use pare_onnx::proto::tensor_proto::DataLocation;
use std::path::{Path, PathBuf};

/// One seed model: its file name and bytes.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The seeds, and the folder a case's model is taken to live in.
pub struct Corpus {
    pub seeds: Vec<Seed>,
    /// The external data files the seeds name, as locations relative to `model_dir`.
    pub data_files: Vec<String>,
    root: tempfile::TempDir,
}

/// The trap files beside the data files, as locations relative to the model's folder.
pub const OUTSIDE: &str = "../outside.bin";
pub const LINK_OUT: &str = "link_out.bin";
pub const PIPE: &str = "pipe.bin";

impl Corpus {
    /// Every `.onnx` file under `models` (recursively, in name order), with the external data
    /// files they name copied beside them into a temporary folder.
    pub fn from_models(models: &Path) -> std::io::Result<Corpus> {
        let mut paths = Vec::new();
        onnx_files(models, &mut paths)?;
        paths.sort();
        let root = tempfile::tempdir()?;
        let model_dir = root.path().join("model");
        std::fs::create_dir(&model_dir)?;
        let mut seeds = Vec::new();
        let mut data_files = Vec::new();
        for path in paths {
            let bytes = std::fs::read(&path)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            for location in external_locations(&bytes, &path) {
                if !data_files.contains(&location) {
                    std::fs::copy(dir.join(&location), model_dir.join(&location))?;
                    data_files.push(location);
                }
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            seeds.push(Seed {
                name: name.into_owned(),
                bytes,
            });
        }
        let corpus = Corpus {
            seeds,
            data_files,
            root,
        };
        corpus.lay_traps()?;
        Ok(corpus)
    }

    /// The trap outside the model's folder, as an absolute path.
    pub fn outside_path(&self) -> PathBuf {
        self.root.path().join("outside.bin")
    }

    /// The path a case's model is read as: its external data resolves against this folder.
    pub fn model_path(&self) -> PathBuf {
        self.root.path().join("model").join("case.onnx")
    }

    fn lay_traps(&self) -> std::io::Result<()> {
        let model_dir = self.root.path().join("model");
        let outside = self.outside_path();
        std::fs::write(&outside, vec![7u8; 1 << 16])?;
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, model_dir.join(LINK_OUT))?;
            // Without mkfifo the pipe trap is simply absent (a missing file is refused too).
            let _ = std::process::Command::new("mkfifo")
                .arg(model_dir.join(PIPE))
                .status();
        }
        Ok(())
    }
}

fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            onnx_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "onnx") {
            out.push(path);
        }
    }
    Ok(())
}

/// The external data locations a model's initializers name (a seed that does not decode names
/// none).
fn external_locations(bytes: &[u8], path: &Path) -> Vec<String> {
    let Ok(model) = pare_onnx::decode(bytes, path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in model.graph.iter().flat_map(|g| &g.initializer) {
        if t.data_location != Some(DataLocation::External as i32) {
            continue;
        }
        for e in &t.external_data {
            if let (Some("location"), Some(v)) = (e.key.as_deref(), &e.value) {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        }
    }
    out
}
