//! Runs the `open_read_write` fuzz target's body over every seed of its
//! committed corpus (`fuzz/corpus/open_read_write/`), on stable Rust: valid
//! images of each type must behave as disks, broken ones must give typed
//! errors, and none may panic.
#![cfg(feature = "alloc")]

#[path = "support/open_read_write.rs"]
mod open_read_write;

use std::path::PathBuf;

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/open_read_write");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_seed_runs_without_panic() {
    let files = corpus();
    assert!(files.len() >= 20, "the seed corpus is missing");
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read seed");
        if std::panic::catch_unwind(|| open_read_write::run(&data)).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(failures.is_empty(), "seeds that panicked: {failures:#?}");
}
