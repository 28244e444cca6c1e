//! Every kept fuzz input (`tests/fuzz/regressions/<target>/`: seeds, and each crash a
//! fuzzer ever found, named `crash-*`) replayed through its harness on stable Rust.
//! A harness panics on a violated property, so a regression fails this test.

#[path = "fuzz/harness.rs"]
mod harness;

#[test]
fn every_kept_fuzz_input_passes_its_harness() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    for (target, run) in harness::TARGETS {
        let dir = root.join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
        assert!(
            inputs > 0,
            "{target} has no kept inputs in {}",
            dir.display()
        );
    }
}
