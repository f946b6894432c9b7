//! Writes the CRDs generated from the Rust types to `charts/treffpunkt/crds/`, one file per
//! kind: `cargo run --bin crdgen`. A test fails when the committed files differ.

use std::path::Path;

use kube::ResourceExt;
use treffpunkt_operator::crd;

fn main() -> std::io::Result<()> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/treffpunkt/crds");
    std::fs::create_dir_all(&directory)?;
    for definition in crd::crds() {
        let path = directory.join(format!("{}.yaml", definition.name_any()));
        std::fs::write(&path, crd::crd_yaml(&definition))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
