//! Any bytes as the last journal segment on disk (what a crash, a bad disk or
//! an attacker with file access could leave): opening must repair or report,
//! never panic; every record it then replays passed its CRC, and decoding its
//! payload may fail but must not panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard::event::Event;
use switchboard::journal::{segment_file_name, Journal, JournalConfig};

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let dir = dir().path().join("journal");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(segment_file_name(1)), data).unwrap();
    let Ok((journal, _recovery)) = Journal::open(JournalConfig::new(&dir)) else {
        return;
    };
    let _ = journal.replay(1, |_lsn, _loc, kind, version, payload| -> Result<(), ()> {
        let _ = Event::decode(kind, version, payload);
        Ok(())
    });
});
