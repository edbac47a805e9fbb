//! A torn or garbage journal tail (a crash mid-write, a disk returning junk)
//! is detected, cut and logged at start-up; everything before it is kept.

use std::io::Write;

use crate::harness::*;

fn last_segment(d: &Daemon) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(d.data_dir().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs.pop().expect("a journal segment")
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn garbage_and_truncated_records_at_the_tail_are_cut_and_the_rest_kept() {
    let mut d = Daemon::start().await;
    // Record framing: magic F7 C1 5B 4A, then length, crc, kind, version, lsn.
    let partial_header = [0xF7, 0xC1, 0x5B, 0x4A, 0xF4, 0x01, 0x00, 0x00, 0x12];
    let partial_payload = {
        let mut r = vec![0xF7, 0xC1, 0x5B, 0x4A, 0x00, 0x02, 0x00, 0x00];
        r.extend_from_slice(&[0xAB; 24 + 100]);
        r
    };
    let garbage: Vec<u8> = (0..777u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let tails: [&[u8]; 3] = [&garbage, &partial_header, &partial_payload];
    let mut expected = 0;
    for (i, tail) in tails.iter().enumerate() {
        for j in 0..20 {
            d.post_ok(&text_body(
                "100000000000001",
                &format!("15553000{i}{j:02}"),
                &format!("wamid.TORN.{i}.{j}"),
                1_768_000_000 + j,
                "kept",
            ))
            .await;
        }
        expected += 20;
        // Crash without a checkpoint: the journal alone holds these.
        d.kill9();
        let seg = last_segment(&d);
        let before = std::fs::metadata(&seg).unwrap().len();
        append(&seg, tail);
        d.restart().await;
        assert_eq!(
            std::fs::metadata(&seg).unwrap().len(),
            before,
            "the tail is cut back to the last good record"
        );
        assert_eq!(d.all_messages().await.len(), expected, "tail variant {i}");
        assert!(
            d.metric("switchboard_journal_truncated_bytes_total", &[])
                .await
                >= tail.len() as f64
        );
        assert!(d.log().contains("torn"), "the cut is logged");
    }
    // The journal keeps working after the repairs, across another crash.
    d.post_ok(&text_body(
        "100000000000001",
        "15553000999",
        "wamid.TORN.after",
        1_768_000_500,
        "after",
    ))
    .await;
    d.kill9();
    d.restart().await;
    assert_eq!(d.all_messages().await.len(), expected + 1);
}
