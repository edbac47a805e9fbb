//! Input = header line, `\n`, body. Signature verification must not panic,
//! must accept only what `sign` would produce (either hex case), and the
//! verify-token comparison must agree with plain equality.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::whatsapp::{sign, verify, verify_token_matches, AppKeys};

const SECRETS: [&[u8]; 2] = [b"test_app_secret", b"secret"];

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let keys = AppKeys::new(&[
        ("main".to_owned(), SECRETS[0].to_vec()),
        ("other".to_owned(), SECRETS[1].to_vec()),
    ]);
    if let Ok(index) = verify(&keys, Some(header), body) {
        let expected = sign(SECRETS[index], body);
        assert!(expected.as_bytes().eq_ignore_ascii_case(header));
    }
    let _ = verify(&keys, None, body);
    if let (Ok(a), Ok(b)) = (std::str::from_utf8(header), std::str::from_utf8(body)) {
        assert_eq!(verify_token_matches(a, b), !a.is_empty() && a == b);
    }
});
