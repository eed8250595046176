//! Where the tests find the local model's files: `$EMBEDQ_MODEL_DIR` or
//! `data/models/all-minilm-l6-v2`, fetched there first (as `embedq fetch-model` does) when they
//! are missing. A test that needs them fails, never skips, when they cannot be had.

#![allow(dead_code)]

use embedq::providers::model_files;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn model_dir() -> PathBuf {
    match std::env::var_os("EMBEDQ_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/models/all-minilm-l6-v2"),
    }
}

/// The model directory, fetched once (the same `embedq fetch-model` step a user runs) when the
/// files are not there; fails the test (never skips it) when they cannot be had.
pub fn required_model_dir() -> PathBuf {
    static FETCHED: OnceLock<PathBuf> = OnceLock::new();
    FETCHED
        .get_or_init(|| {
            let dir = model_dir();
            if !model_files::missing_files(&dir).is_empty() {
                eprintln!("fetching the local model into {}", dir.display());
                if let Err(e) = model_files::fetch(&dir) {
                    panic!(
                        "the local model's files are missing in {} and fetching them failed: {e} \
                         (set EMBEDQ_MODEL_DIR to a directory holding them)",
                        dir.display()
                    );
                }
            }
            dir
        })
        .clone()
}
