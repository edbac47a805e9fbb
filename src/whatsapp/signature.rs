//! Webhook authentication: the `X-Hub-Signature-256` HMAC and the GET
//! handshake's verify token.
//!
//! Invariants:
//! - The HMAC is checked over the body bytes exactly as received; nothing is
//!   re-serialised (Meta escapes non-ASCII as `\uXXXX`, so re-encoding would
//!   change the bytes and the signature).
//! - Every secret comparison is constant time: HMAC tags go through
//!   `ring::hmac::verify`, verify tokens are compared as HMACs of equal length.
//! - App secrets never leave [`AppKeys`]; its `Debug` shows app names only.

use ring::hmac;

/// Why a delivery's signature was refused. The caller answers 401/403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256= and 64 hex digits)")]
    Malformed,
    #[error("X-Hub-Signature-256 does not match any configured app secret")]
    Mismatch,
}

const PREFIX: &[u8] = b"sha256=";
const TAG_LEN: usize = 32;

/// The HMAC keys of every Meta app this deployment serves, in configuration
/// order (the index returned by [`verify`] points into it).
pub struct AppKeys {
    apps: Vec<(String, hmac::Key)>,
}

impl AppKeys {
    /// Build keys from `(app name, app secret)` pairs.
    pub fn new(apps: &[(String, Vec<u8>)]) -> Self {
        AppKeys {
            apps: apps
                .iter()
                .map(|(name, secret)| (name.clone(), hmac::Key::new(hmac::HMAC_SHA256, secret)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// Name of the app at `index` (as returned by [`verify`]).
    pub fn name(&self, index: usize) -> Option<&str> {
        self.apps.get(index).map(|(name, _)| name.as_str())
    }
}

impl std::fmt::Debug for AppKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.apps.iter().map(|(name, _)| name))
            .finish()
    }
}

/// Check `header` (the raw `X-Hub-Signature-256` value) against `body` with
/// each app's key; returns the index of the first app whose secret signed it.
/// With no apps configured every signature is a [`SignatureError::Mismatch`].
pub fn verify(keys: &AppKeys, header: Option<&[u8]>, body: &[u8]) -> Result<usize, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let tag = parse_header(header).ok_or(SignatureError::Malformed)?;
    keys.apps
        .iter()
        .position(|(_, key)| hmac::verify(key, body, &tag).is_ok())
        .ok_or(SignatureError::Mismatch)
}

/// `sha256=` followed by exactly 64 hex digits (either case) → the 32-byte tag.
fn parse_header(header: &[u8]) -> Option<[u8; TAG_LEN]> {
    let hex_part = header.strip_prefix(PREFIX)?;
    let mut tag = [0u8; TAG_LEN];
    // hex::decode_to_slice accepts both cases and insists on the exact length.
    hex::decode_to_slice(hex_part, &mut tag).ok()?;
    Some(tag)
}

/// The header value Meta would send for `body` signed with `secret`:
/// `sha256=<lowercase hex>`. Used by tests, the simulator and the load generator.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let mut out = String::with_capacity(PREFIX.len() + 2 * TAG_LEN);
    out.push_str("sha256=");
    out.push_str(&hex::encode(tag.as_ref()));
    out
}

/// Constant-time check of the handshake's `hub.verify_token` against ours.
///
/// Both strings are reduced to an HMAC of fixed length before comparing, so
/// neither the content nor the length of `expected` leaks through timing. An
/// empty `expected` never matches: an unset token must not open the handshake.
pub fn verify_token_matches(expected: &str, given: &str) -> bool {
    if expected.is_empty() {
        return false;
    }
    // The key only needs to be fixed; secrecy comes from `expected` itself.
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"switchboard verify-token comparison");
    let expected_tag = hmac::sign(&key, expected.as_bytes());
    hmac::verify(&key, given.as_bytes(), expected_tag.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(apps: &[(&str, &[u8])]) -> AppKeys {
        let owned: Vec<(String, Vec<u8>)> = apps
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_vec()))
            .collect();
        AppKeys::new(&owned)
    }

    const BODY1: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;
    const SIG1: &str = "sha256=dec6a680679a968e7e0319355b23599cbfc54502c0784668e9618baa0c633756";
    const SIG2: &str = "sha256=0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914";

    #[test]
    fn spec_test_vectors_sign() {
        assert_eq!(sign(b"test_app_secret", BODY1), SIG1);
        assert_eq!(sign(b"secret", b"test"), SIG2);
    }

    #[test]
    fn spec_test_vectors_verify() {
        let k = keys(&[("main", b"test_app_secret")]);
        assert_eq!(verify(&k, Some(SIG1.as_bytes()), BODY1), Ok(0));
        let k = keys(&[("other", b"secret")]);
        assert_eq!(verify(&k, Some(SIG2.as_bytes()), b"test"), Ok(0));
    }

    #[test]
    fn wrong_secret_is_mismatch() {
        let k = keys(&[("main", b"not_the_secret")]);
        assert_eq!(
            verify(&k, Some(SIG1.as_bytes()), BODY1),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_body_is_mismatch() {
        let k = keys(&[("main", b"test_app_secret")]);
        let tampered = br#"{"object":"whatsapp_business_account","entry":[ ]}"#;
        assert_eq!(
            verify(&k, Some(SIG1.as_bytes()), tampered),
            Err(SignatureError::Mismatch)
        );
        // One flipped bit in the last byte.
        let mut body = BODY1.to_vec();
        *body.last_mut().unwrap() ^= 1;
        assert_eq!(
            verify(&k, Some(SIG1.as_bytes()), &body),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_header() {
        let k = keys(&[("main", b"test_app_secret")]);
        assert_eq!(verify(&k, None, BODY1), Err(SignatureError::Missing));
    }

    #[test]
    fn malformed_headers() {
        let k = keys(&[("main", b"test_app_secret")]);
        let hex = &SIG1["sha256=".len()..];
        let cases: Vec<Vec<u8>> = vec![
            hex.as_bytes().to_vec(),                         // no prefix
            format!("sha1={hex}").into_bytes(),              // wrong algorithm
            format!("SHA256={hex}").into_bytes(),            // prefix is case-sensitive
            format!("sha256={}", &hex[..63]).into_bytes(),   // short
            format!("sha256={hex}0").into_bytes(),           // long
            format!("sha256={}zz", &hex[..62]).into_bytes(), // non-hex
            format!("sha256= {}", &hex[..63]).into_bytes(),  // space inside
            format!("sha256={hex} ").into_bytes(),           // trailing space
            b"sha256=".to_vec(),                             // empty
            Vec::new(),                                      // empty header
            vec![0xff; 71],                                  // not UTF-8
        ];
        for header in cases {
            assert_eq!(
                verify(&k, Some(&header), BODY1),
                Err(SignatureError::Malformed),
                "{:?}",
                String::from_utf8_lossy(&header)
            );
        }
    }

    #[test]
    fn uppercase_hex_accepted() {
        let k = keys(&[("main", b"test_app_secret")]);
        let upper = format!("sha256={}", SIG1["sha256=".len()..].to_ascii_uppercase());
        assert_eq!(verify(&k, Some(upper.as_bytes()), BODY1), Ok(0));
    }

    #[test]
    fn second_app_matches() {
        let k = keys(&[("first", b"other_secret"), ("second", b"test_app_secret")]);
        assert_eq!(verify(&k, Some(SIG1.as_bytes()), BODY1), Ok(1));
        assert_eq!(k.name(1), Some("second"));
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn no_apps_is_mismatch() {
        let k = keys(&[]);
        assert!(k.is_empty());
        assert_eq!(
            verify(&k, Some(SIG1.as_bytes()), BODY1),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let k = keys(&[("main", b"test_app_secret")]);
        let shown = format!("{k:?}");
        assert!(shown.contains("main"));
        assert!(!shown.contains("test_app_secret"));
    }

    #[test]
    fn sign_roundtrips_through_verify() {
        let body = "{\"text\":\"\\uc548\\ub155\"}".as_bytes();
        let header = sign(b"s3cret", body);
        assert!(header.starts_with("sha256="));
        assert_eq!(header.len(), 7 + 64);
        assert!(header[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let k = keys(&[("a", b"s3cret")]);
        assert_eq!(verify(&k, Some(header.as_bytes()), body), Ok(0));
    }

    #[test]
    fn verify_token() {
        assert!(verify_token_matches("tok-123", "tok-123"));
        assert!(!verify_token_matches("tok-123", "tok-124"));
        assert!(!verify_token_matches("tok-123", "tok-1234"));
        assert!(!verify_token_matches("tok-123", "tok"));
        assert!(!verify_token_matches("tok-123", ""));
        assert!(!verify_token_matches("", ""));
        assert!(verify_token_matches("한국어 토큰", "한국어 토큰"));
    }
}
