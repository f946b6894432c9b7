//! Helm and the chart: Helm is built from its Go module by `deploy/tools/build.sh helm` (the
//! test command builds it first and passes its path in `TREFFPUNKT_HELM`) and runs with a home
//! of its own; the chart's value sets and the example manifests are read from the repository.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use kube::api::DynamicObject;

/// The chart's directory.
pub fn chart() -> PathBuf {
    super::repository("charts/treffpunkt")
}

/// The value set `set` of the chart's `ci/` directory.
pub fn values(set: &str) -> PathBuf {
    chart().join("ci").join(format!("{set}-values.yaml"))
}

/// A tool that `deploy/tools/build.sh` builds: the path in the environment variable `env` (the
/// test command builds the tools first), or built (and cached) now.
pub fn tool(name: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let script = super::repository("deploy/tools/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("deploy/tools/build.sh runs");
    assert!(output.status.success(), "building {name} failed");
    let stdout = String::from_utf8(output.stdout).expect("a path");
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

/// The Helm binary: `TREFFPUNKT_HELM`, or built (and cached) by `deploy/tools/build.sh`.
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| tool("helm", "TREFFPUNKT_HELM"))
}

/// Runs Helm with a home of its own, so that nothing of the user's Helm setup is used or
/// changed.
pub fn helm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let home = std::env::temp_dir().join(format!("treffpunkt-helm-{}", std::process::id()));
        std::fs::create_dir_all(&home).expect("a Helm home");
        home
    });
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs")
}

/// Runs Helm and returns its output; fails the test with Helm's own message otherwise.
pub fn helm_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = helm(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "helm failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The objects of a multi-document YAML stream (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<DynamicObject> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .expect("Helm renders valid YAML")
        .into_iter()
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::from_value(doc).expect("every document is a Kubernetes object"))
        .collect()
}

/// The kind of `object`, or nothing.
pub fn kind(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// The directory of the example manifests.
pub fn examples() -> PathBuf {
    super::repository("deploy/examples")
}

/// The objects of an example manifest file in `deploy/examples/`.
pub fn example(file: &str) -> Vec<DynamicObject> {
    let path = examples().join(file);
    documents(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}")))
}

/// The objects the chart renders (release `treffpunkt`) with `--set values`.
pub fn render_with(values: &str) -> Vec<DynamicObject> {
    let chart = chart();
    documents(&helm_ok([
        "template".as_ref(),
        "treffpunkt".as_ref(),
        chart.as_os_str(),
        "--set".as_ref(),
        values.as_ref(),
    ]))
}
