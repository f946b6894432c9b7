//! Replays every committed input of each fuzz target: the corpus the fuzzers start from and
//! the crashes they found. Each must run to its end; a crash that was fixed stays fixed.

use std::path::PathBuf;

/// The files under `fuzz/<folder>/<target>`, sorted.
fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    // The checkout this test runs from (cargo says so when it runs the test), not the one it
    // was built in: checkouts that share a build folder may share this binary.
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo runs the test"))
        .join(folder)
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display())),
        // A target without regressions has no folder for them.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && folder != "corpus" => {
            Vec::new()
        }
        Err(error) => panic!("reading {}: {error}", dir.display()),
    };
    files.retain(|file| file.is_file());
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_runs_it_and_its_regressions() {
    for (target, run) in treffpunkt_fuzz::TARGETS {
        let corpus = inputs("corpus", target);
        assert!(!corpus.is_empty(), "{target} has a corpus");
        for file in corpus.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(file).unwrap();
            eprintln!("{target}: {}", file.display());
            run(&data);
        }
    }
}

#[test]
fn the_datagram_target_reaches_live_sessions() {
    // The harness's sessions answered the browser offer of the corpus: without their username
    // fragments, STUN from the fuzzer would never reach a session.
    let answered = treffpunkt_fuzz::ufrags_known();
    assert_eq!(answered, 2, "both sessions answered the offer");
}

#[test]
fn the_connected_target_has_a_call_whose_sessions_are_up() {
    // Without a connected call, the target's datagrams would be strangers' and stop at the gate.
    assert!(treffpunkt_fuzz::call_connected());
}
