//! The container images, assembled without a container engine by `deploy/images/assemble.sh`
//! (static binaries, crane, OCI image layouts); the test command assembles them first and
//! passes the directory in `TREFFPUNKT_IMAGES`.
//!
//! No container engine runs here, so the images are checked the way a runtime would read them:
//! the layout and its digests, the configuration (user, entrypoint, ports), the exact list of
//! files, and then each binary run from nothing but its image's files (a chroot, as the image's
//! user), with only what the kubelet adds to a container: `/etc/hosts` and the environment.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_port;

/// The directory with one OCI layout per image.
fn images() -> &'static Path {
    static IMAGES: OnceLock<PathBuf> = OnceLock::new();
    IMAGES.get_or_init(|| {
        if let Ok(path) = std::env::var("TREFFPUNKT_IMAGES") {
            return PathBuf::from(path);
        }
        let script = support::repository("deploy/images/assemble.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("deploy/images/assemble.sh runs");
        assert!(output.status.success(), "assembling the images failed");
        let stdout = String::from_utf8(output.stdout).expect("a path");
        PathBuf::from(stdout.lines().last().expect("a path").trim())
    })
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An image as its OCI layout holds it.
struct Image {
    config: Value,
    layer: PathBuf,
}

/// Reads the layout at `dir`, checking every digest on the way.
fn image(name: &str) -> Image {
    let dir = images().join(name);
    assert_eq!(
        read_json(&dir.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let blob = |descriptor: &Value| -> PathBuf {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let path = dir.join("blobs/sha256").join(hex);
        let bytes = std::fs::read(&path).expect("the blob is in the layout");
        assert_eq!(bytes.len() as u64, descriptor["size"].as_u64().unwrap());
        let actual = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let actual: String = actual.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(actual, hex, "{name}: the blob matches its digest");
        path
    };
    let index = read_json(&dir.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{name}: one image in the layout");
    assert_eq!(
        manifests[0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = read_json(&blob(&manifests[0]));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = read_json(&blob(&manifest["config"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{name}: one layer, no base image");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    Image {
        config,
        layer: blob(&layers[0]),
    }
}

/// The layer's entries: (mode, owner, path).
fn entries(layer: &Path) -> BTreeSet<(String, String, String)> {
    let output = Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(layer)
        .output()
        .expect("tar runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields.last().unwrap().trim_end_matches('/').to_owned(),
            )
        })
        .collect()
}

#[test]
fn each_image_holds_its_static_binary_and_an_unprivileged_user_and_nothing_else() {
    for (name, binary, command) in [
        ("operator", "treffpunkt", Some("operator")),
        ("media-node", "treffpunkt-media-node", None),
    ] {
        let image = image(name);
        let config = &image.config;
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["User"], "65532:65532", "{name}: not root");
        let path = format!("/usr/local/bin/{binary}");
        assert_eq!(config["config"]["Entrypoint"], serde_json::json!([path]));
        assert_eq!(
            config["config"]["Cmd"],
            command.map_or(Value::Null, |c| serde_json::json!([c]))
        );
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.licenses"],
            "AGPL-3.0-or-later"
        );
        let dir = |p: &str| ("drwxr-xr-x".to_owned(), "0/0".to_owned(), p.to_owned());
        let expected = BTreeSet::from([
            dir("etc"),
            ("-rw-r--r--".into(), "0/0".into(), "etc/group".into()),
            ("-rw-r--r--".into(), "0/0".into(), "etc/passwd".into()),
            dir("usr"),
            dir("usr/local"),
            dir("usr/local/bin"),
            (
                "-rwxr-xr-x".into(),
                "0/0".into(),
                format!("usr/local/bin/{binary}"),
            ),
        ]);
        assert_eq!(
            entries(&image.layer),
            expected,
            "{name}: exactly these files"
        );
    }
}

/// The image's files in a directory of their own, with the `/etc/hosts` a kubelet would add.
fn unpack(name: &str, hosts: &str) -> PathBuf {
    let root = std::env::temp_dir().join(support::unique(&format!("treffpunkt-image-{name}")));
    std::fs::create_dir_all(&root).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&image(name).layer)
        .arg("-C")
        .arg(&root)
        .status()
        .expect("tar runs");
    assert!(status.success());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    std::fs::write(root.join("etc/hosts"), hosts).unwrap();
    root
}

/// Runs `args` inside `root` as the images' user (as root: chroot; otherwise in a user
/// namespace).
fn run_in(root: &Path, args: &[&str], env: &[(&str, String)]) -> Command {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut command = if is_root {
        let mut c = Command::new("chroot");
        c.arg("--userspec=65532:65532").arg(root);
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "chroot"]).arg(root);
        c
    };
    // Only what a container runtime gives: its default PATH and the container's environment.
    command.args(args).env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// GET `path` over HTTP/1.0; the status line and body, once something answers.
fn get(address: SocketAddr, path: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(address) {
            let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            stream.write_all(request.as_bytes()).ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            return Some(response);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_media_node_runs_from_its_image_alone_and_dials_the_control_plane_by_name() {
    let root = unpack(
        "media-node",
        "127.0.0.1 localhost\n127.0.0.1 treffpunkt-attach.treffpunkt.svc\n",
    );
    // Plays the control plane: the node must find it by name and open an HTTP/2 connection.
    let control_plane = TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_port = control_plane.local_addr().unwrap().port();
    let health = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let node = run_in(
        &root,
        &["/usr/local/bin/treffpunkt-media-node"],
        &[
            (
                "TREFFPUNKT_CONTROL_PLANE",
                format!("http://treffpunkt-attach.treffpunkt.svc:{grpc_port}"),
            ),
            ("TREFFPUNKT_NODE_ID", "image-test".to_owned()),
            ("TREFFPUNKT_UDP_BIND", format!("127.0.0.1:{}", free_port())),
            ("TREFFPUNKT_HEALTH_LISTEN", health.to_string()),
            ("TREFFPUNKT_GRANT_KEY", "0123456789abcdef".to_owned()),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("the media node starts");
    let _node = Running(node);

    let health_answer = get(health, "/healthz", Duration::from_secs(20));
    assert!(
        health_answer
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.0 200")),
        "the health endpoint answers: {health_answer:?}"
    );
    control_plane.set_nonblocking(false).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = control_plane.accept() {
            let mut preface = [0u8; 24];
            let _ = stream.read_exact(&mut preface);
            let _ = tx.send(preface);
        }
    });
    let preface = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the media node dials the control plane");
    assert_eq!(
        &preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "an HTTP/2 (gRPC) connection"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_control_plane_runs_from_its_image_alone_and_serves_the_web_client() {
    let root = unpack("operator", "127.0.0.1 localhost\n");
    let version = run_in(&root, &["/usr/local/bin/treffpunkt", "--version"], &[])
        .output()
        .expect("the binary runs");
    assert!(version.status.success(), "{version:?}");
    let said = String::from_utf8_lossy(&version.stdout);
    assert!(
        said.starts_with("treffpunkt") && said.contains(env!("CARGO_PKG_VERSION")),
        "{said}"
    );

    // Standalone mode: the same binary with everything in one process, no cluster needed.
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let udp = free_port().to_string();
    let process = run_in(
        &root,
        &[
            "/usr/local/bin/treffpunkt",
            "standalone",
            "--listen",
            &http.to_string(),
            "--udp-port",
            &udp,
            "--tcp-port",
            "0",
        ],
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("the control plane starts");
    let _process = Running(process);
    let page = get(http, "/", Duration::from_secs(20)).expect("the gateway answers");
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(
        page.contains("<html"),
        "the web client is in the binary: {page}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
