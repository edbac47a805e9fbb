//! Behaviour of the filter: the match table of the module docs, spans, the
//! terms file, and hot reload.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const TERMS: &[&str] = &[
    "free",
    "winner",
    "무료",
    "당첨",
    "免费",
    "中奖",
    "click here",
    "sex",
];

fn filter() -> Filter {
    Filter::from_terms(TERMS).expect("terms compile")
}

/// (text, expected: Some((term, the original span it names)) or None).
const TABLE: &[(&str, Option<(&str, &str)>)] = &[
    // Latin: plain, case, position.
    ("free", Some(("free", "free"))),
    ("FREE delivery today", Some(("free", "FREE"))),
    ("Delivery is Free", Some(("free", "Free"))),
    ("you are the WiNnEr!", Some(("winner", "WiNnEr"))),
    // Letter spacing and punctuation between letters.
    ("get it f r e e now", Some(("free", "f r e e"))),
    ("F.R.E.E", Some(("free", "F.R.E.E"))),
    ("f-r-e-e stuff", Some(("free", "f-r-e-e"))),
    ("fr ee", Some(("free", "fr ee"))),
    ("w_i_n_n_e_r", Some(("winner", "w_i_n_n_e_r"))),
    ("Get a F R E E gift", Some(("free", "F R E E"))),
    ("I a m f r e e", Some(("free", "f r e e"))),
    // Full-width, zero-width, soft hyphen, strike-through marks.
    ("ｆｒｅｅ", Some(("free", "ｆｒｅｅ"))),
    ("Ｆ Ｒ Ｅ Ｅ gift", Some(("free", "Ｆ Ｒ Ｅ Ｅ"))),
    ("fr\u{200b}ee", Some(("free", "fr\u{200b}ee"))),
    ("win\u{ad}ner", Some(("winner", "win\u{ad}ner"))),
    (
        "f\u{336}r\u{336}e\u{336}e\u{336}",
        Some(("free", "f\u{336}r\u{336}e\u{336}e\u{336}")),
    ),
    // Emoji: cut tokens, and the span covers the emoji inside the term.
    ("🎁fr🎉ee🎁", Some(("free", "fr🎉ee"))),
    ("free🎁", Some(("free", "free"))),
    // Kind changes cut tokens.
    ("100% free", Some(("free", "free"))),
    ("free2play", Some(("free", "free"))),
    ("무료free배송", Some(("무료", "무료"))),
    ("지금free", Some(("free", "free"))),
    // Several words as one term.
    ("please CLICK HERE", Some(("click here", "CLICK HERE"))),
    ("click-here", Some(("click here", "click-here"))),
    // Known, documented false positives of the whole-token rule.
    ("f r e e d o m", Some(("free", "f r e e"))),
    ("it's ex-rated", Some(("sex", "s ex"))),
    // Korean: substring, particles, spacing, jamo spelling, fillers.
    ("무료", Some(("무료", "무료"))),
    ("오늘 무료로 드립니다", Some(("무료", "무료"))),
    ("당첨되었습니다", Some(("당첨", "당첨"))),
    ("무 료 배송", Some(("무료", "무 료"))),
    ("무.료", Some(("무료", "무.료"))),
    ("ㅁㅜㄹㅛ", Some(("무료", "ㅁㅜㄹㅛ"))),
    ("ㅁ ㅜ ㄹ ㅛ 배송", Some(("무료", "ㅁ ㅜ ㄹ ㅛ"))),
    ("ㄷㅏㅇㅊㅓㅁ", Some(("당첨", "ㄷㅏㅇㅊㅓㅁ"))),
    ("무\u{3164}료", Some(("무료", "무\u{3164}료"))),
    ("무료ㅋㅋ", Some(("무료", "무료"))),
    ("무료하다", Some(("무료", "무료"))),
    // Chinese: substring, spacing, full-width punctuation between.
    ("免费", Some(("免费", "免费"))),
    ("今天免费送货", Some(("免费", "免费"))),
    ("恭喜中奖了", Some(("中奖", "中奖"))),
    ("免 费", Some(("免费", "免 费"))),
    ("免，费", Some(("免费", "免，费"))),
    ("中\u{200b}奖", Some(("中奖", "中\u{200b}奖"))),
    // Not matched, by the boundary rule.
    ("carefree weekend", None), // starts inside the token "carefree"
    ("freedom", None),          // ends inside the token
    ("if reeds grow", None),    // starts inside "if"
    ("care\u{200b}free", None), // zero-width does not cut: one token
    ("the winners", None),      // ends inside "winners"
    ("essex", None),            // inside a token
    // Not matched: out of scope or deliberately not converted.
    ("免費", None), // traditional form: list it too
    ("frée", None), // NFKC keeps diacritics
    ("fr3e", None), // leetspeak
    ("frее", None), // Cyrillic е: look-alike letters
    ("", None),
    ("!!! 🎉 ...", None),
    ("Your order has shipped.", None),
    ("배송이 시작되었습니다", None),
    ("您的订单已发货", None),
];

#[test]
fn the_match_table_holds() {
    let f = filter();
    for &(text, want) in TABLE {
        let got = f.check(text);
        match (want, &got) {
            (None, None) => {}
            (Some((term, span)), Some(m)) => {
                assert_eq!(m.term, term, "{text:?}");
                assert_eq!(&text[m.start..m.end], span, "{text:?}");
            }
            _ => panic!("{text:?}: expected {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_rejected_candidate_does_not_hide_an_accepted_one() {
    let f = filter();
    let text = "carefree and free";
    let m = f.check(text).expect("the second free");
    assert_eq!((m.start, m.end), (13, 17));
    // Overlapping candidates: "ab" fails (ends inside "bc"), "bc" is whole.
    let f = Filter::from_terms(["ab", "bc"]).unwrap();
    let m = f.check("a bc").expect("bc");
    assert_eq!(m.term, "bc");
}

#[test]
fn terms_keep_their_configured_spelling_and_duplicates_count_once() {
    let f = Filter::from_terms(["  Free  ", "FREE", "f r e e", "무료"]).unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.terms().collect::<Vec<_>>(), ["Free", "무료"]);
    assert_eq!(f.check("free!").unwrap().term, "Free");
}

#[test]
fn a_term_with_nothing_to_match_is_an_error_naming_it() {
    let err = Filter::from_terms(["free", "🎁 !"]).unwrap_err();
    assert!(
        matches!(&err, FilterError::EmptyTerm { path: None, line: 2, term } if term == "🎁 !"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "term 2: term \"🎁 !\" has no letter or digit once normalised"
    );
}

#[test]
fn the_terms_file_format() {
    let text = "\u{feff}# compliance list\r\n\r\nfree\r\n   winner   \n# 무료\n당첨\n";
    let f = Filter::parse(text, None).unwrap();
    assert_eq!(f.terms().collect::<Vec<_>>(), ["free", "winner", "당첨"]);
    assert!(f.check("무료").is_none(), "a comment line is not a term");
    let err = Filter::parse("free\n\n  ---  \n", Some(Path::new("/etc/terms.txt"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/terms.txt:3: term \"---\" has no letter or digit once normalised"
    );
}

#[test]
fn a_file_that_is_not_utf8_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terms.txt");
    std::fs::write(&path, b"free\nwin\xffner\n").unwrap();
    let err = Filter::load(&path).unwrap_err();
    assert!(
        matches!(err, FilterError::NotUtf8 { line: 2, .. }),
        "{err:?}"
    );
    let err = Filter::load(dir.path().join("missing.txt")).unwrap_err();
    assert!(matches!(err, FilterError::Read { .. }), "{err:?}");
}

#[test]
fn an_empty_list_refuses_nothing() {
    let f = Filter::from_terms(Vec::<String>::new()).unwrap();
    assert!(f.is_empty());
    assert!(f.check("free winner 무료").is_none());
    let f = Filter::parse("# nothing yet\n\n", None).unwrap();
    assert_eq!(f.len(), 0);
}

#[test]
fn spans_are_char_boundaries_for_odd_inputs() {
    let f = filter();
    for text in [
        "e\u{301}free\u{301}",
        "ﬁfree",
        "ｶﾞfree",
        "\u{301}\u{301}free",
        "free\u{e0001}\u{e0066}",
        "무\u{1161}\u{11a8}료",
        "🏳️‍🌈free🏳️‍🌈",
    ] {
        let n = normalise(text);
        let mut last = 0..0;
        for r in &n.map {
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            assert!(r.start >= last.start && r.end >= last.end, "{text:?}");
            last = r.clone();
        }
        if let Some(m) = f.check(text) {
            assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn reload_swaps_a_good_list_and_keeps_the_old_one_on_a_bad_edit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terms.txt");
    write(&path, "free\n");
    let set = FilterSet::new(Some(path.clone())).unwrap();
    let before = set.current();
    assert!(set.check("free").is_some());
    assert!(set.check("winner").is_none());

    write(&path, "free\nwinner\n");
    assert_eq!(set.reload().unwrap(), 2);
    assert!(set.check("WINNER").is_some());
    // A filter taken before the reload keeps working as it was.
    assert!(before.check("winner").is_none());

    write(&path, "free\nwinner\n\n%%%\nprize\n");
    let err = set.reload().unwrap_err();
    assert!(
        matches!(&err, FilterError::EmptyTerm { line: 4, path: Some(p), .. } if *p == path),
        "{err:?}"
    );
    assert!(err.to_string().contains("terms.txt:4"), "{err}");
    assert_eq!(set.current().len(), 2);
    assert!(set.check("prize").is_none());
    assert!(set.check("winner").is_some());
}

#[test]
fn no_file_means_an_empty_list() {
    let set = Arc::new(FilterSet::new(None).unwrap());
    assert!(set.current().is_empty());
    assert_eq!(set.reload().unwrap(), 0);
    let _guard = set.spawn_watcher(Duration::from_millis(10)).unwrap();
    assert!(set.check("free").is_none());
}

#[test]
fn a_bad_file_at_start_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terms.txt");
    write(&path, "ok\n...\n");
    let err = FilterSet::new(Some(path)).unwrap_err();
    assert!(matches!(err, FilterError::EmptyTerm { line: 2, .. }));
}

/// Wait for `cond` until `deadline`; true when it held.
fn wait_for(deadline: Duration, cond: impl Fn() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn the_watcher_picks_up_edits_and_stops_with_its_guard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("terms.txt");
    write(&path, "free\n");
    let set = Arc::new(FilterSet::new(Some(path.clone())).unwrap());
    let guard = set.spawn_watcher(Duration::from_millis(10)).unwrap();

    // Different length too, so a coarse modification time cannot hide it.
    write(&path, "free\nwinner\n");
    assert!(
        wait_for(Duration::from_secs(10), || set.check("winner").is_some()),
        "the watcher did not load the edit"
    );

    // A bad edit is not taken; the list in force stays.
    write(&path, "free\nwinner\n???\n");
    assert!(
        wait_for(Duration::from_secs(10), || set.has_seen_file()),
        "the watcher did not look at the bad edit"
    );
    assert_eq!(set.current().len(), 2);

    // Replaced by rename, as editors do.
    let tmp = dir.path().join("terms.new");
    write(&tmp, "prize\n");
    std::fs::rename(&tmp, &path).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || set.check("prize").is_some()),
        "the watcher did not load the replaced file"
    );
    assert!(set.check("winner").is_none());

    drop(guard);
    // Stopped: further edits are no longer picked up.
    write(&path, "prize\nwinner\nfree\n");
    assert!(!wait_for(Duration::from_millis(100), || set
        .current()
        .len()
        != 1));
}
