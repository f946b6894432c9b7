//! Mutual TLS on the Attach port: the platform's certificate authority, the certificates it
//! issues, and the port's TLS.
//!
//! The [`Authority`] (its key kept in a Secret, see `crate::attach_ca`) issues each MediaPool's
//! nodes a short-lived certificate that names the pool ([`treffpunkt_proto::identity::pool`]),
//! and each control-plane replica its own server certificate
//! ([`treffpunkt_proto::identity::CONTROL_PLANE`]). [`serve_tls`] takes only connections whose
//! client shows a certificate of that authority; the registration then must be for the pool the
//! certificate names ([`certificate_names`]). The server's certificate is renewed while it
//! serves, long before it expires, without touching the connections that are up.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::PublicKeyData as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};
use treffpunkt_proto::grant::SharedKeyring;
use treffpunkt_proto::identity;

use super::Fleet;
use super::attach::{AttachService, PodOfPool};

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The authority's certificate or key is not what it should be.
    #[error("the certificate authority: {0}")]
    Authority(String),
    /// A certificate could not be issued.
    #[error("issuing a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    /// The TLS configuration was refused.
    #[error("the TLS configuration: {0}")]
    Config(String),
}

/// A certificate and its private key, as PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// When the certificate expires, in seconds since the Unix epoch.
    pub not_after: u64,
}

/// How long the authority's own certificate lasts: its key is rotated by making a new one.
const AUTHORITY_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a replica's server certificate lasts, and when it is renewed: halfway.
const SERVER_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// How long a new TLS connection may take to shake hands.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes may be under way at once; a connection beyond is closed at once, so
/// that strangers who open connections and never finish cost a bounded amount.
const MAX_HANDSHAKES: usize = 256;

/// The platform's certificate authority for the Attach port.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority")
    }
}

/// The authority's own parameters: the same every time, so that an authority read back from
/// its PEM signs as the one that made its certificate.
fn authority_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Treffpunkt Attach CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn now_unix() -> u64 {
    treffpunkt_proto::grant::now_unix_ms() / 1000
}

/// `params` valid from a minute ago (clocks differ a little) for `lifetime`.
fn valid_for(params: &mut CertificateParams, lifetime: Duration) -> Result<u64, TlsError> {
    let now = now_unix();
    let at = |seconds: u64| {
        time::OffsetDateTime::from_unix_timestamp(seconds as i64)
            .map_err(|error| TlsError::Authority(error.to_string()))
    };
    params.not_before = at(now.saturating_sub(60))?;
    let not_after = now + lifetime.as_secs();
    params.not_after = at(not_after)?;
    Ok(not_after)
}

impl Authority {
    /// A new authority with a new key.
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = authority_params();
        valid_for(&mut params, AUTHORITY_LIFETIME)?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(authority_params(), key),
            cert_pem,
        })
    }

    /// The authority whose certificate and key these are.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = KeyPair::from_pem(key_pem)?;
        let certificate = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|error| TlsError::Authority(error.to_string()))?;
        // Its certificate must be for this very key.
        let parsed = ParsedCertificate::try_from(&certificate)
            .map_err(|error| TlsError::Authority(error.to_string()))?;
        if parsed.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
            return Err(TlsError::Authority(
                "the certificate is not for the key".to_owned(),
            ));
        }
        Ok(Self {
            issuer: Issuer::new(authority_params(), key),
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The authority's certificate, as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The authority's key, as PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A new certificate with a new key for `name`, lasting `lifetime`: for a server (the
    /// control plane) or a client (a media node).
    pub fn issue(
        &self,
        name: &str,
        lifetime: Duration,
        server: bool,
    ) -> Result<Credential, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        params.use_authority_key_identifier_extension = true;
        let not_after = valid_for(&mut params, lifetime)?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok(Credential {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

/// Whether the certificate `der` names `name` (its chain was checked by the handshake).
pub fn certificate_names(der: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(parsed), Ok(name)) = (ParsedCertificate::try_from(der), ServerName::try_from(name))
    else {
        return false;
    };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The replica's own certificate, renewed while it serves.
#[derive(Debug)]
struct ServerCertificate {
    current: RwLock<(Arc<CertifiedKey>, u64)>,
}

fn certified(credential: &Credential) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = vec![
        CertificateDer::from_pem_slice(credential.cert_pem.as_bytes())
            .map_err(|error| TlsError::Config(error.to_string()))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(credential.key_pem.as_bytes())
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

impl ServerCertificate {
    fn issue(authority: &Authority) -> Result<(Arc<CertifiedKey>, u64), TlsError> {
        let credential = authority.issue(identity::CONTROL_PLANE, SERVER_LIFETIME, true)?;
        Ok((certified(&credential)?, credential.not_after))
    }

    /// Renews the certificate once half its life has passed.
    fn renew_if_due(&self, authority: &Authority) {
        let not_after = self.lock_read().1;
        if now_unix() + SERVER_LIFETIME.as_secs() / 2 < not_after {
            return;
        }
        match Self::issue(authority) {
            Ok(renewed) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = renewed;
                info!("renewed the Attach port's certificate");
            }
            Err(error) => warn!(%error, "could not renew the Attach port's certificate"),
        }
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, u64)> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lock_read().0.clone())
    }
}

/// The Attach port's TLS: this replica's certificate, and client certificates of `authority`
/// required.
fn server_config(
    authority: &Authority,
    certificate: Arc<ServerCertificate>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(authority.cert_pem().as_bytes())
        .map_err(|error| TlsError::Config(error.to_string()))?;
    roots
        .add(ca)
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Serves the `Attach` endpoint on `listener` with mutual TLS: only clients with a certificate
/// of `authority` get through the handshake, and a registration must be for the pool the
/// certificate names, under an id of that pool (see [`AttachService::requiring_certificates`],
/// which `pods` is for). Otherwise as [`super::attach::serve`].
pub async fn serve_tls(
    fleet: Arc<Fleet>,
    listener: TcpListener,
    grant_keys: SharedKeyring,
    authority: Arc<Authority>,
    pods: PodOfPool,
) -> Result<(), TlsError> {
    let certificate = Arc::new(ServerCertificate {
        current: RwLock::new(ServerCertificate::issue(&authority)?),
    });
    let config = server_config(&authority, certificate.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn({
        let (certificate, authority) = (certificate, authority.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                certificate.renew_if_due(&authority);
            }
        }
    });
    let (connections, incoming) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "the Attach port cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Without Nagle's algorithm, as in `attach::serve`.
            let _ = stream.set_nodelay(true);
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                debug!(%peer, "too many TLS handshakes under way on the Attach port");
                continue;
            };
            let (acceptor, connections) = (acceptor.clone(), connections.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = connections.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(error)) => {
                        debug!(%peer, %error, "refused a TLS handshake on the Attach port");
                    }
                    Err(_) => debug!(%peer, "a TLS handshake on the Attach port timed out"),
                }
            });
        }
    });
    let service = AttachService::new(fleet, grant_keys).requiring_certificates(pods);
    super::attach::serve_incoming(service, ReceiverStream::new(incoming)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn a_pool_certificate_names_its_pool_and_no_other() {
        let authority = Authority::generate().unwrap();
        let credential = authority
            .issue(&identity::pool("alpha"), Duration::from_secs(3600), false)
            .unwrap();
        assert!(certificate_names(
            &der(&credential.cert_pem),
            &identity::pool("alpha")
        ));
        assert!(!certificate_names(
            &der(&credential.cert_pem),
            &identity::pool("beta")
        ));
        assert!(!certificate_names(
            &der(&credential.cert_pem),
            identity::CONTROL_PLANE
        ));
    }

    #[test]
    fn an_authority_read_back_from_its_pem_is_the_same_and_its_key_must_match() {
        let authority = Authority::generate().unwrap();
        let again = Authority::from_pem(authority.cert_pem(), &authority.key_pem()).unwrap();
        assert_eq!(again.cert_pem(), authority.cert_pem());
        let other = Authority::generate().unwrap();
        assert!(Authority::from_pem(authority.cert_pem(), &other.key_pem()).is_err());
        assert!(Authority::from_pem("garbage", &authority.key_pem()).is_err());
    }
}
