//! The CRDs committed to the chart are exactly what the Rust types generate.

use kube::ResourceExt;
use treffpunkt_operator::crd;

#[test]
fn committed_crds_match_the_types() {
    // The repository this test runs from (cargo says so when it runs the test), not the one it
    // was built in: checkouts that share a build folder may share this binary.
    let directory = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo runs the test"),
    )
    .join("../charts/treffpunkt/crds");
    for definition in crd::crds() {
        let path = directory.join(format!("{}.yaml", definition.name_any()));
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "{} is missing ({error}); run `cargo run --bin crdgen`",
                path.display()
            )
        });
        assert!(
            committed == crd::crd_yaml(&definition),
            "{} differs from the types; run `cargo run --bin crdgen` and commit the result",
            path.display()
        );
    }
}
