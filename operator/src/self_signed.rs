//! A certificate for standalone mode when a club has none of its own: browsers let a page use
//! the camera and microphone only over HTTPS (or on the machine itself), so a server that others
//! on a LAN join must speak HTTPS.
//!
//! [`load_or_make`] makes a self-signed certificate for the announced address at first start
//! and keeps it, with its key, in a folder on disk; later starts use it again, so that a
//! browser told once to trust it keeps trusting it. A new one is made only when the addresses
//! changed or the old one expires within a month. Its SHA-256 fingerprint is what participants
//! compare with what their browser shows before they accept it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rcgen::{CertificateParams, DnType, KeyPair};

/// How long a certificate is valid: no longer than browsers accept for any certificate.
const LIFETIME: Duration = Duration::from_secs(397 * 24 * 3600);
/// How long before it expires a certificate is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";
/// The names the certificate was made for and when it expires (seconds since 1970), one per
/// line, the expiry first.
const ABOUT_FILE: &str = "about";

/// A certificate and its key, PEM.
#[derive(Debug)]
pub struct SelfSigned {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The SHA-256 fingerprint of the certificate, as browsers show it (`AB:CD:...`).
    pub fingerprint: String,
    /// Whether it was made by this start (rather than read from `dir`).
    pub new: bool,
    /// The file it is kept in.
    pub path: PathBuf,
    /// The file its key is kept in.
    pub key_path: PathBuf,
}

/// The certificate in `dir` if it was made for `names` (addresses or host names) and is valid
/// for more than a month; otherwise a new one, written to `dir` (only the owner may read the
/// key).
pub fn load_or_make(dir: &Path, names: &[String]) -> anyhow::Result<SelfSigned> {
    let path = dir.join(CERT_FILE);
    if let Some((cert_pem, key_pem)) = kept(dir, names) {
        let fingerprint = fingerprint(&cert_pem)?;
        return Ok(SelfSigned {
            cert_pem,
            key_pem,
            fingerprint,
            new: false,
            path,
            key_path: dir.join(KEY_FILE),
        });
    }
    let mut params =
        CertificateParams::new(names.to_vec()).context("the addresses for the certificate")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Treffpunkt");
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + LIFETIME).into();
    let key = KeyPair::generate().context("making a key")?;
    let cert_pem = params
        .self_signed(&key)
        .context("making a certificate")?
        .pem();
    let key_pem = key.serialize_pem();
    let expires = (now + LIFETIME).duration_since(UNIX_EPOCH)?.as_secs();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&dir.join(KEY_FILE), &key_pem)?;
    std::fs::write(&path, &cert_pem).with_context(|| format!("writing {}", path.display()))?;
    let about = std::iter::once(expires.to_string())
        .chain(names.iter().cloned())
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join(ABOUT_FILE), about + "\n")?;
    let fingerprint = fingerprint(&cert_pem)?;
    Ok(SelfSigned {
        cert_pem,
        key_pem,
        fingerprint,
        new: true,
        path,
        key_path: dir.join(KEY_FILE),
    })
}

/// The kept certificate and key, if they are for `names` and not about to expire.
fn kept(dir: &Path, names: &[String]) -> Option<(String, String)> {
    let about = std::fs::read_to_string(dir.join(ABOUT_FILE)).ok()?;
    let mut lines = about.lines();
    let expires: u64 = lines.next()?.parse().ok()?;
    let made_for: Vec<&str> = lines.collect();
    let fresh = UNIX_EPOCH + Duration::from_secs(expires) > SystemTime::now() + RENEW_BEFORE;
    if !fresh || made_for != names.iter().map(String::as_str).collect::<Vec<_>>() {
        return None;
    }
    let cert = std::fs::read_to_string(dir.join(CERT_FILE)).ok()?;
    let key = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    Some((cert, key))
}

pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The SHA-256 fingerprint of the first certificate in `cert_pem`, as `AB:CD:...`.
pub fn fingerprint(cert_pem: &str) -> anyhow::Result<String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let der =
        CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("reading the certificate")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &der);
    let hex: Vec<String> = digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect();
    Ok(hex.join(":"))
}

/// Where standalone mode keeps what it must remember between starts: `$XDG_STATE_HOME`, or
/// `~/.local/state`, then `treffpunkt`.
pub fn default_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(base.join("treffpunkt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn a_certificate_is_made_once_and_used_again_until_the_addresses_change() {
        let dir = std::env::temp_dir().join(format!("treffpunkt-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lan = names(&["192.168.1.10", "localhost"]);
        let first = load_or_make(&dir, &lan).unwrap();
        assert!(first.new);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "only the owner reads the key");
        // The certificate and key belong together: a TLS server takes them.
        crate::gateway::Tls::from_pem(&first.cert_pem, &first.key_pem).unwrap();

        let again = load_or_make(&dir, &lan).unwrap();
        assert!(!again.new, "the same certificate at the next start");
        assert_eq!(again.fingerprint, first.fingerprint);

        let moved = load_or_make(&dir, &names(&["192.168.1.20", "localhost"])).unwrap();
        assert!(moved.new, "a new address needs a new certificate");
        assert_ne!(moved.fingerprint, first.fingerprint);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
