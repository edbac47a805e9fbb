//! API authentication: the admin token, and who a request is.
//!
//! Owns the admin token's life: taken from the configuration
//! (`auth.admin_token_file` / `auth.admin_token_env`), or generated on the
//! first start with only its SHA-256 kept in `data_dir/admin_token.sha256`.
//!
//! Invariants:
//! - A generated token is never stored; [`AdminAuth::init`] hands it back
//!   exactly once so the daemon can print it. Losing it means deleting the
//!   hash file and restarting.
//! - Presented tokens are compared as SHA-256 digests, over all 32 bytes
//!   without an early exit.
//! - The hash file is replaced atomically (temp file, fsync, rename, fsync of
//!   the directory) and is readable by its owner only (0600).

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::config::Secret;

/// File in `data_dir` holding the hex SHA-256 of a generated admin token.
pub const HASH_FILE: &str = "admin_token.sha256";

/// Prefix of generated tokens, so a leaked one is recognizable (and
/// greppable by secret scanners).
pub const TOKEN_PREFIX: &str = "swb_";

/// Random bytes in a generated token.
const TOKEN_BYTES: usize = 32;

type Digest = [u8; SHA256_OUTPUT_LEN];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is corrupt: expected the 64 hex digit SHA-256 of the admin token \
         (delete it and restart to generate a new token)",
        path.display()
    )]
    CorruptHash { path: PathBuf },
    #[error("the system random number generator failed")]
    Random,
}

/// Who a request was authenticated as. Agents with their own tokens come
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Admin,
}

/// Checks presented admin tokens against the digest of the valid one.
#[derive(Clone)]
pub struct AdminAuth {
    digest: Digest,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminAuth { .. }")
    }
}

impl AdminAuth {
    /// Sets up admin authentication at start-up.
    ///
    /// A configured token wins and nothing is written. Otherwise the digest
    /// in `data_dir/admin_token.sha256` is used; if there is none, a token
    /// is generated, its digest stored (creating `data_dir` if needed), and
    /// the token returned so the caller can show it once.
    pub fn init(
        data_dir: &Path,
        configured: Option<&Secret>,
    ) -> Result<(AdminAuth, Option<String>), AuthError> {
        if let Some(token) = configured {
            return Ok((AdminAuth::from_token(token.expose()), None));
        }
        let path = data_dir.join(HASH_FILE);
        match fs::read(&path) {
            Ok(contents) => {
                let digest = parse_digest(&contents).ok_or(AuthError::CorruptHash { path })?;
                Ok((AdminAuth { digest }, None))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = generate_token()?;
                let auth = AdminAuth::from_token(token.as_bytes());
                write_digest(data_dir, &auth.digest)?;
                Ok((auth, Some(token)))
            }
            Err(source) => Err(AuthError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Accepts exactly `token`.
    pub fn from_token(token: &[u8]) -> AdminAuth {
        AdminAuth {
            digest: sha256(token),
        }
    }

    /// Checks an `Authorization` header value: `Bearer <token>`, the scheme
    /// in any case.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Option<Principal> {
        let token = bearer_token(authorization?)?;
        let presented = sha256(token);
        // Both sides are fixed-size digests: fold over every byte so the time
        // taken does not depend on where they first differ.
        let difference = presented
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (std::hint::black_box(difference) == 0).then_some(Principal::Admin)
    }
}

/// A new admin token: `swb_` and 32 random bytes in hex.
pub fn generate_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// SHA-256 of `bytes`, lower-case hex (how agent tokens are stored).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

/// SHA-256 hex of the bearer token in an Authorization header.
pub fn bearer_sha256_hex(authorization: &[u8]) -> Option<String> {
    bearer_token(authorization).map(sha256_hex)
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; SHA256_OUTPUT_LEN];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The token of a `Bearer` credential (RFC 6750), or `None` for any other
/// scheme or shape.
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let split = header.iter().position(|b| *b == b' ' || *b == b'\t')?;
    let (scheme, rest) = header.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    let well_formed = !token.is_empty() && token.iter().all(|b| b.is_ascii_graphic());
    well_formed.then_some(token)
}

/// The digest from the hash file: 64 hex digits, optionally followed by a
/// line ending.
fn parse_digest(contents: &[u8]) -> Option<Digest> {
    let text = contents.trim_ascii_end();
    if text.len() != 2 * SHA256_OUTPUT_LEN {
        return None;
    }
    let mut digest = [0u8; SHA256_OUTPUT_LEN];
    hex::decode_to_slice(text, &mut digest).ok()?;
    Some(digest)
}

fn write_digest(data_dir: &Path, digest: &Digest) -> Result<(), AuthError> {
    let io_error = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| AuthError::Io {
            action,
            path,
            source,
        }
    };
    // The data directory holds customer conversations: owner only.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io_error("create", data_dir))?;

    let path = data_dir.join(HASH_FILE);
    let tmp = data_dir.join(format!("{HASH_FILE}.tmp"));
    // A leftover from a crash may have other permissions; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove", &tmp)(e));
        }
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(format!("{}\n", hex::encode(digest)).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io_error("rename into", &path))?;
    // The rename is durable only once the directory entry is.
    File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("sync", data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn header(value: &str) -> Option<Principal> {
        AdminAuth::from_token(b"swb_abc").authenticate(Some(value.as_bytes()))
    }

    #[test]
    fn generated_token_is_stored_as_hash_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data/nested");
        let (auth, token) = AdminAuth::init(&data_dir, None).unwrap();
        let token = token.expect("a new token on first start");
        assert!(token.starts_with("swb_"), "{token}");
        assert_eq!(token.len(), 4 + 64);
        assert!(token[4..].bytes().all(|b| b.is_ascii_hexdigit()));

        let path = data_dir.join(HASH_FILE);
        let stored = fs::read_to_string(&path).unwrap();
        assert_eq!(
            stored,
            format!("{}\n", hex::encode(sha256(token.as_bytes())))
        );
        assert!(!stored.contains(&token[4..]));
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!data_dir.join(format!("{HASH_FILE}.tmp")).exists());

        let good = format!("Bearer {token}");
        assert_eq!(
            auth.authenticate(Some(good.as_bytes())),
            Some(Principal::Admin)
        );

        // A restart loads the same digest and hands out no new token.
        let (again, none) = AdminAuth::init(&data_dir, None).unwrap();
        assert!(none.is_none());
        assert_eq!(
            again.authenticate(Some(good.as_bytes())),
            Some(Principal::Admin)
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), stored);

        let wrong = format!("Bearer {}", generate_token().unwrap());
        assert_eq!(again.authenticate(Some(wrong.as_bytes())), None);
        assert_eq!(again.authenticate(None), None);
        assert_eq!(again.authenticate(Some(token.as_bytes())), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_strict_otherwise() {
        assert_eq!(header("Bearer swb_abc"), Some(Principal::Admin));
        assert_eq!(header("bearer swb_abc"), Some(Principal::Admin));
        assert_eq!(header("BEARER   swb_abc  "), Some(Principal::Admin));
        assert_eq!(header("Bearer\tswb_abc"), Some(Principal::Admin));
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "swb_abc",
            "Basic swb_abc",
            "Bearerswb_abc",
            "Bearer swb_ab",
            "Bearer swb_abcd",
            "Bearer swb_abc extra",
            "Token swb_abc",
        ] {
            assert_eq!(header(bad), None, "{bad:?}");
        }
        let auth = AdminAuth::from_token(b"swb_abc");
        assert_eq!(auth.authenticate(Some(b"Bearer swb_abc\xff")), None);
    }

    #[test]
    fn configured_token_wins_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, generated) = AdminAuth::init(dir.path(), None).unwrap();
        let generated = generated.unwrap();

        let configured = Secret::from("from-config");
        let (auth, token) = AdminAuth::init(dir.path(), Some(&configured)).unwrap();
        assert!(token.is_none());
        assert_eq!(
            auth.authenticate(Some(b"Bearer from-config")),
            Some(Principal::Admin)
        );
        let old = format!("Bearer {generated}");
        assert_eq!(auth.authenticate(Some(old.as_bytes())), None);

        let fresh = dir.path().join("fresh");
        AdminAuth::init(&fresh, Some(&configured)).unwrap();
        assert!(!fresh.exists());
    }

    #[test]
    fn corrupt_hash_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HASH_FILE);
        for contents in ["", "abc\n", &"zz".repeat(32), &"ab".repeat(33)] {
            fs::write(&path, contents).unwrap();
            let err = AdminAuth::init(dir.path(), None).unwrap_err();
            assert!(matches!(err, AuthError::CorruptHash { .. }), "{err}");
            assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
        }
        // Upper-case hex without a newline is still a digest.
        let digest = sha256(b"swb_x");
        fs::write(&path, hex::encode_upper(digest)).unwrap();
        let (auth, _) = AdminAuth::init(dir.path(), None).unwrap();
        assert_eq!(
            auth.authenticate(Some(b"Bearer swb_x")),
            Some(Principal::Admin)
        );
    }

    #[test]
    fn generated_tokens_differ() {
        assert_ne!(generate_token().unwrap(), generate_token().unwrap());
        assert_eq!(
            format!("{:?}", AdminAuth::from_token(b"t")),
            "AdminAuth { .. }"
        );
    }
}
