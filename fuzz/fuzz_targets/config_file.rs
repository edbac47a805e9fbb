//! Any text as a config file: parsing and validation must report problems,
//! never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let origin = std::env::temp_dir().join("fuzz-switchboard.toml");
    if let Err(errors) = switchboard::config::parse(text, &origin) {
        // Rendering the report must work for whatever was found.
        let _ = errors.to_string();
    }
});
