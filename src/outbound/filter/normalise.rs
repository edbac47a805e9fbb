//! Normalisation for the sensitive-word filter: turns a term or a message into
//! the string the matcher searches, and remembers for every normalised char
//! where it came from and whether a token boundary precedes it.
//!
//! Steps, per *segment* of the input (see below): Unicode NFKC, then full case
//! folding, then keep letters and digits only. Removed: whitespace,
//! punctuation, symbols, emoji, format characters (U+200B–200F, U+2060,
//! U+FEFF, U+00AD, bidi controls, tags), variation selectors, combining marks
//! left after NFKC, the Hangul fillers (U+3164, U+FFA0, U+115F, U+1160: they
//! are "letters" that show as nothing), the Arabic tatweel and apostrophe-like
//! modifier letters (U+02B9–02C1, U+02C6–02D1). Combining marks that spell
//! vowels are kept in Brahmic and South-East Asian scripts (their Alphabetic
//! marks), but not Hebrew, Arabic or Syriac points, which are optional and so
//! a free disguise. Finally Hangul written with jamo is recomposed into
//! syllables (see `hangul.rs`).
//!
//! Segments: the input is cut before every character that NFKC can never
//! combine with what precedes it (canonical combining class 0, and the first
//! character of its compatibility decomposition is NFKC quick-check Yes).
//! NFKC of the whole text is then exactly the concatenation of NFKC of the
//! segments, so each normalised char can be mapped to the byte range of its
//! segment: one original character in nearly all text, a base with its marks,
//! or a jamo sequence NFKC composes.
//!
//! Invariants: terms and messages go through this one function; every range
//! in the map lies on char boundaries of the input and ranges never go
//! backwards; no input panics; normalising a message allocates nothing once
//! the scratch buffers have grown to its size.

use std::ops::Range;

use caseless::Caseless;
use unicode_normalization::char::{
    canonical_combining_class, decompose_compatible, is_combining_mark,
};
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

use super::hangul;

/// A normalised text and, for each of its chars in order, the byte range of
/// the original text it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    pub text: String,
    pub map: Vec<Range<usize>>,
}

/// Normalise `text` the way the filter does (terms and messages alike).
pub fn normalise(text: &str) -> Normalised {
    let mut scratch = Scratch::default();
    scratch.normalise(text);
    Normalised {
        text: scratch.text.clone(),
        map: scratch.chars.iter().map(|n| n.start..n.end).collect(),
    }
}

/// What kind of character a normalised char is, for the boundary rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// A letter of a script that separates words with spaces (Latin,
    /// Cyrillic, Greek, Arabic, Devanagari, ...).
    Word,
    /// A digit or other number character.
    Digit,
    /// A letter of a script written without spaces between words, or whose
    /// words take particles (Han, Hangul, kana, Thai, Lao, Khmer, ...).
    Unspaced,
}

/// One normalised char.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NChar {
    pub(crate) c: char,
    /// Byte range in the original text.
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Byte offset in the normalised text.
    pub(crate) at: usize,
    pub(crate) class: Class,
    /// A token ends before this char: it is the first, or a visible
    /// separator or a change of class lies between it and the previous one.
    pub(crate) boundary_before: bool,
    /// Hangul that came from jamo in the original (to be recomposed).
    pub(crate) spelled: bool,
}

/// Reusable buffers: one per thread in the filter, so checking a message
/// does not allocate.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) text: String,
    pub(crate) chars: Vec<NChar>,
    /// Spare buffers for the (rare) Hangul recomposition.
    pub(crate) spare: Vec<NChar>,
    pub(crate) jamo: Vec<NChar>,
    /// A visible separator was removed since the last pushed char.
    hard: bool,
    /// Some pushed char is spelled Hangul.
    spelled: bool,
}

/// Buffers above this are given back after use, so one huge message does not
/// pin its memory to a thread for ever.
const KEEP_CAPACITY: usize = 16 * 1024;

impl Scratch {
    /// Normalise `input` into `self.text` / `self.chars`.
    pub(crate) fn normalise(&mut self, input: &str) {
        self.text.clear();
        self.chars.clear();
        self.hard = false;
        self.spelled = false;
        let mut seg_start = 0;
        for (i, c) in input.char_indices() {
            if i > seg_start && starts_segment(c) {
                self.segment(input, seg_start, i);
                seg_start = i;
            }
        }
        if seg_start < input.len() {
            self.segment(input, seg_start, input.len());
        }
        if self.spelled {
            hangul::recompose(self);
            self.text.clear();
            for n in &mut self.chars {
                n.at = self.text.len();
                self.text.push(n.c);
            }
        }
    }

    /// Drop oversized buffers (after a huge message).
    pub(crate) fn trim(&mut self) {
        if self.text.capacity() > KEEP_CAPACITY * 4 {
            self.text = String::new();
        }
        for v in [&mut self.chars, &mut self.spare, &mut self.jamo] {
            if v.capacity() > KEEP_CAPACITY {
                *v = Vec::new();
            }
        }
    }

    /// Index of the normalised char that holds byte `byte` of `self.text`.
    pub(crate) fn char_index(&self, byte: usize) -> usize {
        self.chars
            .partition_point(|n| n.at <= byte)
            .saturating_sub(1)
    }

    fn segment(&mut self, input: &str, start: usize, end: usize) {
        let seg = &input[start..end];
        let bytes = seg.as_bytes();
        // ASCII fast path: most segments of most messages.
        if let [b] = bytes {
            if b.is_ascii_alphanumeric() {
                let class = if b.is_ascii_digit() {
                    Class::Digit
                } else {
                    Class::Word
                };
                self.push(char::from(b.to_ascii_lowercase()), class, start, end, false);
            } else {
                self.hard = true;
            }
            return;
        }
        let mut chars = seg.chars();
        if let Some(first) = chars.next() {
            // Han, Hangul syllables, kana: NFKC- and fold-stable.
            if chars.as_str().is_empty() && is_stable_unspaced(first) {
                self.push(first, Class::Unspaced, start, end, false);
                return;
            }
        }
        let spelled = seg.chars().any(is_jamo);
        let before = self.chars.len();
        for c in seg.chars().nfkc().default_case_fold() {
            if keep(c) {
                self.push(c, class_of(c), start, end, spelled);
            }
        }
        if self.chars.len() == before {
            if seg.chars().any(|c| !is_invisible(c)) {
                self.hard = true;
            }
        } else if spelled {
            self.spelled = true;
        }
    }

    fn push(&mut self, c: char, class: Class, start: usize, end: usize, spelled: bool) {
        let boundary_before = self
            .chars
            .last()
            .is_none_or(|prev| self.hard || prev.class != class);
        self.chars.push(NChar {
            c,
            start,
            end,
            at: self.text.len(),
            class,
            boundary_before,
            spelled,
        });
        self.text.push(c);
        self.hard = false;
    }
}

/// True when NFKC never combines `c` with anything before it, so a segment
/// may start at `c`.
fn starts_segment(c: char) -> bool {
    if c.is_ascii() || is_stable_unspaced(c) {
        return true;
    }
    let mut first = None;
    decompose_compatible(c, |d| {
        if first.is_none() {
            first = Some(d);
        }
    });
    let d = first.unwrap_or(c);
    canonical_combining_class(d) == 0 && is_nfkc_quick(std::iter::once(d)) == IsNormalized::Yes
}

/// Characters NFKC and case folding leave alone, that start a segment, and
/// that belong to scripts without spaces: the common CJK case, skipped fast.
fn is_stable_unspaced(c: char) -> bool {
    matches!(c,
        '\u{3041}'..='\u{3096}'     // hiragana
        | '\u{30A1}'..='\u{30FA}'   // katakana
        | '\u{3400}'..='\u{4DBF}'   // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'   // CJK unified ideographs
        | '\u{AC00}'..='\u{D7A3}'   // Hangul syllables
        | '\u{20000}'..='\u{2F7FF}' // CJK extensions B–F (not the compatibility supplement)
        | '\u{30000}'..='\u{3FFFF}')
}

/// Scripts written without spaces between words (or, for Hangul, whose words
/// carry particles): a match there may start and end anywhere.
pub(crate) fn is_unspaced(c: char) -> bool {
    matches!(c,
        '\u{0E00}'..='\u{0EFF}'     // Thai, Lao
        | '\u{0F00}'..='\u{0FFF}'   // Tibetan
        | '\u{1000}'..='\u{109F}'   // Myanmar
        | '\u{1100}'..='\u{11FF}'   // Hangul jamo
        | '\u{1780}'..='\u{17FF}'   // Khmer
        | '\u{1950}'..='\u{19FF}'   // Tai Le, New Tai Lue, Khmer symbols
        | '\u{1A20}'..='\u{1AAF}'   // Tai Tham
        | '\u{2E80}'..='\u{2FDF}'   // CJK and Kangxi radicals
        | '\u{3005}'..='\u{3007}'   // 々 〆 〇
        | '\u{3021}'..='\u{3029}'   // Hangzhou numerals
        | '\u{3031}'..='\u{3035}'   // kana repeat marks
        | '\u{3038}'..='\u{303C}'
        | '\u{3040}'..='\u{30FF}'   // hiragana, katakana
        | '\u{3100}'..='\u{31FF}'   // bopomofo, compatibility jamo, kana extensions
        | '\u{3400}'..='\u{4DBF}'
        | '\u{4E00}'..='\u{9FFF}'
        | '\u{A000}'..='\u{A4CF}'   // Yi
        | '\u{A960}'..='\u{A97F}'   // Hangul jamo extended A
        | '\u{AC00}'..='\u{D7FF}'   // Hangul syllables, jamo extended B
        | '\u{F900}'..='\u{FAFF}'   // CJK compatibility ideographs
        | '\u{FF66}'..='\u{FFDC}'   // halfwidth kana and Hangul
        | '\u{16FE0}'..='\u{18AFF}' // Tangut and friends
        | '\u{1B000}'..='\u{1B16F}' // kana supplement
        | '\u{20000}'..='\u{3FFFF}')
}

fn class_of(c: char) -> Class {
    if c.is_ascii() {
        if c.is_ascii_digit() {
            Class::Digit
        } else {
            Class::Word
        }
    } else if is_unspaced(c) {
        Class::Unspaced
    } else if c.is_numeric() {
        Class::Digit
    } else {
        Class::Word
    }
}

/// Hangul jamo in the original text (conjoining, compatibility, halfwidth).
fn is_jamo(c: char) -> bool {
    matches!(c,
        '\u{1100}'..='\u{11FF}'
        | '\u{3131}'..='\u{318E}'
        | '\u{A960}'..='\u{A97F}'
        | '\u{D7B0}'..='\u{D7FF}'
        | '\u{FFA1}'..='\u{FFDC}')
}

/// Does a normalised (NFKC, folded) char stay in the text?
fn keep(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric();
    }
    if !c.is_alphanumeric() || is_removed_letter(c) {
        return false;
    }
    // Alphanumeric marks are vowel signs; only the optional points go.
    !(is_combining_mark(c) && has_optional_points(c))
}

/// Letters (by Unicode) that show as nothing or as punctuation.
fn is_removed_letter(c: char) -> bool {
    matches!(c,
        '\u{02B9}'..='\u{02C1}'     // ʹ ʺ ʻ ʼ ʽ ʾ ʿ ˀ ˁ
        | '\u{02C6}'..='\u{02D1}'   // ˆ ˇ ˈ ˉ ˊ ˋ ˌ ...
        | '\u{0640}'                // Arabic tatweel
        | '\u{07FA}'                // NKo lajanyalan
        | '\u{115F}' | '\u{1160}'   // Hangul choseong/jungseong fillers
        | '\u{3164}' | '\u{FFA0}') // Hangul fillers
}

/// Hebrew, Arabic, Syriac: vowel points are optional in ordinary writing.
fn has_optional_points(c: char) -> bool {
    matches!(c,
        '\u{0590}'..='\u{074F}'
        | '\u{0750}'..='\u{077F}'
        | '\u{0870}'..='\u{08FF}'
        | '\u{FB1D}'..='\u{FDFF}'
        | '\u{FE70}'..='\u{FEFF}')
}

/// Removed characters that do not cut a token: they are invisible or attach
/// to a letter, so inserting them is a disguise, not a word break.
fn is_invisible(c: char) -> bool {
    is_combining_mark(c)
        || matches!(c,
            '\u{00AD}'                  // soft hyphen
            | '\u{034F}'                // combining grapheme joiner
            | '\u{061C}'                // Arabic letter mark
            | '\u{0640}' | '\u{07FA}'   // tatweel, lajanyalan
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}'
            | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'   // Mongolian selectors, vowel separator
            | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, marks
            | '\u{202A}'..='\u{202E}'   // bidi embeddings
            | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
            | '\u{2066}'..='\u{206F}'   // bidi isolates, deprecated formats
            | '\u{FE00}'..='\u{FE0F}'   // variation selectors
            | '\u{FEFF}'                // BOM / zero-width no-break space
            | '\u{1BCA0}'..='\u{1BCA3}' // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}' // musical format controls
            | '\u{E0000}'..='\u{E0FFF}') // tags, variation selectors supplement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        normalise(s).text
    }

    #[test]
    fn disguises_of_free_all_normalise_to_free() {
        for s in [
            "free",
            "FREE",
            "f r e e",
            "F.R.E.E",
            "f-r-e-e",
            "ｆｒｅｅ",
            "Ｆ Ｒ Ｅ Ｅ",
            "fr\u{200b}ee",
            "f\u{00ad}r\u{2060}e\u{feff}e\u{200d}",
            "f\u{0336}r\u{0336}e\u{0336}e\u{0336}",
            "f\u{fe0f}ree",
            "🎁 free! 🎉",
        ] {
            assert_eq!(text(s), "free", "{s:?}");
        }
        assert_eq!(text("ﬁ"), "fi");
        assert_eq!(text("STRASSE Straße"), "strassestrasse");
        assert_eq!(text("⼤"), "大");
        assert_eq!(text("①②"), "12");
    }

    #[test]
    fn segments_compose_like_whole_text_nfkc() {
        // Halfwidth ka + halfwidth voiced mark compose into ガ only if kept together.
        assert_eq!(text("ｶﾞ"), "ガ");
        assert_eq!(text("e\u{301}"), "é");
        assert_eq!(text("\u{1106}\u{116E}"), "무");
    }

    #[test]
    fn map_points_back_at_the_original_bytes() {
        let s = "x ｆ-r\u{200b}e";
        let n = normalise(s);
        assert_eq!(n.text, "xfre");
        let parts: Vec<&str> = n.map.iter().map(|r| &s[r.clone()]).collect();
        assert_eq!(parts, ["x", "ｆ", "r", "e"]);
        let n = normalise("ﬁ");
        assert_eq!(n.map, [0..3, 0..3]);
    }

    #[test]
    fn invisible_characters_do_not_cut_tokens_but_visible_ones_do() {
        let mut s = Scratch::default();
        s.normalise("care\u{200b}free care free 무료free7");
        let bounds: Vec<bool> = s.chars.iter().map(|n| n.boundary_before).collect();
        let starts: String = s
            .chars
            .iter()
            .zip(&bounds)
            .map(|(n, b)| if *b { '|' } else { n.c })
            .collect();
        // A '|' stands for a char that starts a token.
        assert_eq!(starts, "|arefree|are|ree|료|ree|");
    }

    #[test]
    fn removed_letters_and_optional_points() {
        assert_eq!(text("\u{3164}무\u{3164}료"), "무료");
        assert_eq!(text("مجــاني"), "مجاني");
        assert_eq!(text("مَجَّانِي"), "مجاني");
        // Devanagari vowel signs spell the word and stay.
        assert_eq!(
            text("मुफ़्त"),
            "मुफ़्त"
                .nfkc()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        );
        assert_eq!(text("fʼrʼeʼe"), "free");
    }
}
