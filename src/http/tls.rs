//! TLS material and rustls configurations for the public listener and our own clients.
//!
//! Owns: loading (PEM via `rustls::pki_types::pem::PemObject`) or generating (rcgen) the
//! server certificate, building server and client configs, and [`TlsSource`], the swappable
//! current server config.
//!
//! Invariants:
//! - exactly one crypto provider, *ring*, passed explicitly to every config builder (never the
//!   process default, which panics when two providers are linked);
//! - TLS 1.3 and TLS 1.2 only, with *ring*'s default suites, which are all ECDHE + AEAD:
//!   TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256,
//!   TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
//!   TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
//!   TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
//!   (key exchange X25519, P-256, P-384);
//! - the server offers ALPN `h2` then `http/1.1`;
//! - generated files are written atomically (tmp + fsync + rename + directory fsync), the key
//!   with mode 0600; the CA private key is never written, so nothing else can be signed with it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// ALPN identifiers the server offers, in preference order.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN identifier for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Protocol versions we speak: TLS 1.3 preferred, TLS 1.2 for older clients.
static VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// File names under `<data_dir>/tls/` for generated material.
const TLS_DIR: &str = "tls";
const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Errors loading, generating or assembling TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parsing PEM in {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificates { path: PathBuf },
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS configuration plus where its material came from.
#[derive(Debug)]
pub struct TlsMaterial {
    pub server_config: Arc<ServerConfig>,
    /// The CA that issued a generated certificate (clients should trust this file); `None` when
    /// the certificate was supplied by the operator.
    pub ca_pem: Option<PathBuf>,
    /// True when this call generated new material (as opposed to loading files).
    pub generated: bool,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// The single crypto provider used by every config we build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the operator's certificate (`paths = Some((chain, key))`), or the generated one under
/// `data_dir/tls/`, generating it first when any of its three files is missing.
///
/// Generated material is a CA plus a leaf it signed (webpki rejects a self-signed CA used
/// directly as a server certificate) for `localhost`, `127.0.0.1`, `::1` and `extra_names`
/// (IP literals become IP SANs). Existing files are reused as they are: to change the names,
/// delete the directory.
pub fn load_or_generate(
    paths: Option<(&Path, &Path)>,
    data_dir: &Path,
    extra_names: &[String],
) -> Result<TlsMaterial, TlsError> {
    if let Some((cert_path, key_path)) = paths {
        let chain = load_certs(cert_path)?;
        let key = load_key(key_path)?;
        return Ok(TlsMaterial {
            server_config: server_config(chain, key)?,
            ca_pem: None,
            generated: false,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        });
    }

    let dir = data_dir.join(TLS_DIR);
    let ca_path = dir.join(CA_FILE);
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let complete = [&ca_path, &cert_path, &key_path]
        .iter()
        .all(|p| p.is_file());
    let generated = if complete {
        false
    } else {
        // A partial set (e.g. a crash between renames) is not trusted: start over.
        generate_into(&dir, extra_names)?;
        tracing::info!(dir = %dir.display(), "generated a local CA and server certificate");
        true
    };
    let chain = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    Ok(TlsMaterial {
        server_config: server_config(chain, key)?,
        ca_pem: Some(ca_path),
        generated,
        cert_path,
        key_path,
    })
}

/// Builds the server config for a certificate chain (leaf first) and its key.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// Builds a client config trusting only `roots`, offering `alpn`, TLS 1.3 and 1.2.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_for_versions(roots, alpn, VERSIONS)
}

/// Like [`client_config`] but restricted to `versions` (benchmarks and tests pin TLS 1.2).
pub fn client_config_for_versions(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads every certificate in a PEM file (e.g. the generated `ca.pem`).
pub fn load_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_certs(path)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

/// Generates CA + leaf and writes `ca.pem`, `key.pem`, `cert.pem` (leaf then CA) into `dir`.
fn generate_into(dir: &Path, extra_names: &[String]) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    // Validity from yesterday (clock skew) for 10 years (CA) and 2 years (leaf).
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    let start = today.yesterday().unwrap_or(today);
    // Day clamped to 28 so "same day N years later" always exists.
    let ymd = |d: jiff::civil::Date, plus_years: i16| {
        rcgen::date_time_ymd(
            i32::from(d.year() + plus_years),
            d.month().unsigned_abs(),
            d.day().unsigned_abs().min(28),
        )
    };

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Switchboard local CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = ymd(start, 0);
    ca_params.not_after = ymd(start, 10);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let leaf_key = KeyPair::generate()?;
    // CertificateParams::new turns IP literals into IP SANs, the rest into DNS SANs.
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params.distinguished_name = DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = ymd(start, 0);
    leaf_params.not_after = ymd(start, 2);
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    create_private_dir(dir)?;
    let ca_pem = ca_cert.pem();
    write_atomic(&dir.join(CA_FILE), ca_pem.as_bytes(), 0o644)?;
    write_atomic(
        &dir.join(KEY_FILE),
        leaf_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let chain = format!("{}{}", leaf_cert.pem(), ca_pem);
    write_atomic(&dir.join(CERT_FILE), chain.as_bytes(), 0o644)?;
    sync_dir(dir)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}

/// Writes `path` so that readers see either the old file or the complete new one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode applies at creation, so the key is never readable by others, even briefly.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
    #[cfg(unix)]
    {
        // A stale tmp file from a crash keeps its old mode: set it explicitly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
    }
    file.write_all(bytes).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The server config new handshakes use; replaced on certificate reload.
///
/// Each handshake clones the `Arc` once, so a reload affects new connections only and
/// established ones keep the config they started with.
#[derive(Debug)]
pub struct TlsSource {
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsSource {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            current: RwLock::new(config),
        }
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Installs `config` for subsequent handshakes and returns the previous one.
    pub fn replace(&self, config: Arc<ServerConfig>) -> Arc<ServerConfig> {
        std::mem::replace(&mut *self.current.write(), config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_gives_same_ca_and_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(None, dir.path(), &["switchboard.test".into()]).unwrap();
        assert!(first.generated);
        let ca_path = first.ca_pem.clone().unwrap();
        let ca1 = load_ca(&ca_path).unwrap();
        let chain1 = load_certs(&first.cert_path).unwrap();
        assert_eq!(ca1.len(), 1);
        // cert.pem is leaf then CA.
        assert_eq!(chain1.len(), 2);
        assert_eq!(chain1[1], ca1[0]);

        let second = load_or_generate(None, dir.path(), &[]).unwrap();
        assert!(!second.generated);
        assert_eq!(load_ca(&second.ca_pem.unwrap()).unwrap(), ca1);
        assert_eq!(load_certs(&second.cert_path).unwrap(), chain1);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&first.key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join(TLS_DIR))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn partial_material_is_regenerated() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_generate(None, dir.path(), &[]).unwrap();
        let ca1 = load_ca(first.ca_pem.as_ref().unwrap()).unwrap();
        fs::remove_file(&first.cert_path).unwrap();
        let second = load_or_generate(None, dir.path(), &[]).unwrap();
        assert!(second.generated);
        assert_ne!(load_ca(second.ca_pem.as_ref().unwrap()).unwrap(), ca1);
    }

    #[test]
    fn operator_paths_are_loaded_without_ca() {
        let dir = tempfile::tempdir().unwrap();
        let generated = load_or_generate(None, dir.path(), &[]).unwrap();
        let other = tempfile::tempdir().unwrap();
        let loaded = load_or_generate(
            Some((&generated.cert_path, &generated.key_path)),
            other.path(),
            &[],
        )
        .unwrap();
        assert!(!loaded.generated);
        assert!(loaded.ca_pem.is_none());
        // Nothing is generated when the operator supplies paths.
        assert!(!other.path().join(TLS_DIR).exists());
    }

    #[test]
    fn missing_or_empty_files_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(load_ca(&missing), Err(TlsError::Pem { .. })));
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, b"").unwrap();
        assert!(matches!(
            load_ca(&empty),
            Err(TlsError::NoCertificates { .. })
        ));
    }

    #[test]
    fn server_config_offers_only_aead_ecdhe_suites_and_both_alpns() {
        let dir = tempfile::tempdir().unwrap();
        let material = load_or_generate(None, dir.path(), &[]).unwrap();
        let config = &material.server_config;
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        for suite in &config.crypto_provider().cipher_suites {
            let version = suite.version().version;
            assert!(
                version == rustls::ProtocolVersion::TLSv1_3
                    || version == rustls::ProtocolVersion::TLSv1_2,
                "{suite:?}"
            );
            let name = format!("{:?}", suite.suite());
            assert!(
                name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
                "{name}"
            );
            if version == rustls::ProtocolVersion::TLSv1_2 {
                assert!(name.contains("ECDHE"), "{name}");
            }
        }
    }

    #[test]
    fn tls_source_replace_swaps_for_later_readers() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(None, dir.path(), &[])
            .unwrap()
            .server_config;
        let dir2 = tempfile::tempdir().unwrap();
        let b = load_or_generate(None, dir2.path(), &[])
            .unwrap()
            .server_config;
        let source = TlsSource::new(a.clone());
        let held = source.current();
        let old = source.replace(b.clone());
        assert!(Arc::ptr_eq(&old, &a));
        assert!(Arc::ptr_eq(&source.current(), &b));
        // A config already handed out (an established connection) is unaffected.
        assert!(Arc::ptr_eq(&held, &a));
    }
}
