//! Hangul spelled with jamo, recomposed into syllables so that "ㅁㅜㄹㅛ",
//! "ㅁ ㅜ ㄹ ㅛ" and "ㄷㅏㅇㅊㅓㅁ" match the terms "무료" and "당첨".
//!
//! NFKC turns compatibility jamo (ㅁ, U+3141) into conjoining jamo (U+1106)
//! and composes an initial and a vowel that are *adjacent* into a syllable,
//! but it never makes a following consonant a final (ㄷㅏㅇ stays 다 + ᄋ),
//! and separators stop it altogether. So every run of Hangul that came from
//! jamo in the original (consecutive in the normalised text, whatever
//! separators lay between) is taken apart into jamo and parsed again the way
//! a Korean keyboard does: a consonant followed by a vowel starts a syllable;
//! a vowel may absorb a second one into a compound vowel (ㅗ+ㅏ = ㅘ); up to
//! two consonants not followed by a vowel become its final (ㄹ+ㄱ = ㄺ).
//! A jamo that fits no syllable (ㅋㅋ) stays as it is.
//!
//! Invariants: only chars flagged `spelled` are touched, so text typed as
//! syllables ("무료ㅋㅋ") is never re-cut; a composed syllable maps to the
//! union of its jamo's original ranges, so ranges still never go backwards.

use super::normalise::{Class, NChar, Scratch};

const S_BASE: u32 = 0xAC00;
const S_COUNT: u32 = 11172;
const L_BASE: u32 = 0x1100;
const L_COUNT: u32 = 19;
const V_BASE: u32 = 0x1161;
const V_COUNT: u32 = 21;
const T_BASE: u32 = 0x11A7;
const T_COUNT: u32 = 28;

/// The finals (T jamo U+11A8.., index 1..=27) as one or two initial
/// consonants (L jamo); 0 = none.
const FINALS: [(u32, u32); 27] = [
    (0x1100, 0),      // ㄱ
    (0x1101, 0),      // ㄲ
    (0x1100, 0x1109), // ㄳ
    (0x1102, 0),      // ㄴ
    (0x1102, 0x110C), // ㄵ
    (0x1102, 0x1112), // ㄶ
    (0x1103, 0),      // ㄷ
    (0x1105, 0),      // ㄹ
    (0x1105, 0x1100), // ㄺ
    (0x1105, 0x1106), // ㄻ
    (0x1105, 0x1107), // ㄼ
    (0x1105, 0x1109), // ㄽ
    (0x1105, 0x1110), // ㄾ
    (0x1105, 0x1111), // ㄿ
    (0x1105, 0x1112), // ㅀ
    (0x1106, 0),      // ㅁ
    (0x1107, 0),      // ㅂ
    (0x1107, 0x1109), // ㅄ
    (0x1109, 0),      // ㅅ
    (0x110A, 0),      // ㅆ
    (0x110B, 0),      // ㅇ
    (0x110C, 0),      // ㅈ
    (0x110E, 0),      // ㅊ
    (0x110F, 0),      // ㅋ
    (0x1110, 0),      // ㅌ
    (0x1111, 0),      // ㅍ
    (0x1112, 0),      // ㅎ
];

/// (first vowel, second vowel, compound vowel).
const COMPOUND_VOWELS: [(u32, u32, u32); 7] = [
    (0x1169, 0x1161, 0x116A), // ㅗ ㅏ ㅘ
    (0x1169, 0x1162, 0x116B), // ㅗ ㅐ ㅙ
    (0x1169, 0x1175, 0x116C), // ㅗ ㅣ ㅚ
    (0x116E, 0x1165, 0x116F), // ㅜ ㅓ ㅝ
    (0x116E, 0x1166, 0x1170), // ㅜ ㅔ ㅞ
    (0x116E, 0x1175, 0x1171), // ㅜ ㅣ ㅟ
    (0x1173, 0x1175, 0x1174), // ㅡ ㅣ ㅢ
];

fn is_l(c: char) -> bool {
    (L_BASE..L_BASE + L_COUNT).contains(&u32::from(c))
}

fn is_v(c: char) -> bool {
    (V_BASE..V_BASE + V_COUNT).contains(&u32::from(c))
}

fn is_hangul(c: char) -> bool {
    matches!(c, '\u{1100}'..='\u{11FF}' | '\u{A960}'..='\u{A97F}' | '\u{AC00}'..='\u{D7FF}')
}

fn ch(u: u32) -> char {
    // Every value built here is a Hangul code point.
    char::from_u32(u).unwrap_or('\u{FFFD}')
}

/// The final (index 1..=27) that the consonant `l` alone makes, if any.
fn final_of(l: char) -> Option<u32> {
    FINALS
        .iter()
        .position(|&(a, b)| a == u32::from(l) && b == 0)
        .map(|i| i as u32 + 1)
}

/// The compound final that final `t` followed by consonant `l` makes.
fn compound_final(t: u32, l: char) -> Option<u32> {
    let (first, second) = FINALS[t as usize - 1];
    if second != 0 {
        return None;
    }
    FINALS
        .iter()
        .position(|&(a, b)| a == first && b == u32::from(l))
        .map(|i| i as u32 + 1)
}

fn compound_vowel(a: char, b: char) -> Option<char> {
    COMPOUND_VOWELS
        .iter()
        .find(|&&(x, y, _)| x == u32::from(a) && y == u32::from(b))
        .map(|&(_, _, v)| ch(v))
}

/// Recompose every spelled Hangul run of `s.chars` (called only when one
/// exists). Leaves `text` and the `at` offsets for the caller to rebuild.
pub(super) fn recompose(s: &mut Scratch) {
    let mut out = std::mem::take(&mut s.spare);
    let mut jamo = std::mem::take(&mut s.jamo);
    out.clear();
    let mut i = 0;
    while i < s.chars.len() {
        let n = s.chars[i];
        if !(n.spelled && is_hangul(n.c)) {
            out.push(n);
            i += 1;
            continue;
        }
        jamo.clear();
        while i < s.chars.len() && s.chars[i].spelled && is_hangul(s.chars[i].c) {
            explode(s.chars[i], &mut jamo);
            i += 1;
        }
        parse(&jamo, &mut out);
    }
    std::mem::swap(&mut s.chars, &mut out);
    s.spare = out;
    s.jamo = jamo;
}

/// Push `n` as jamo, finals written as initial consonants.
fn explode(n: NChar, jamo: &mut Vec<NChar>) {
    let u = u32::from(n.c);
    let mut push = |c: u32, first: bool| {
        jamo.push(NChar {
            c: ch(c),
            boundary_before: n.boundary_before && first,
            ..n
        })
    };
    if (S_BASE..S_BASE + S_COUNT).contains(&u) {
        let s = u - S_BASE;
        push(L_BASE + s / (V_COUNT * T_COUNT), true);
        push(V_BASE + (s % (V_COUNT * T_COUNT)) / T_COUNT, false);
        let t = s % T_COUNT;
        if t != 0 {
            let (a, b) = FINALS[t as usize - 1];
            push(a, false);
            if b != 0 {
                push(b, false);
            }
        }
    } else if (T_BASE + 1..T_BASE + T_COUNT).contains(&u) {
        let (a, b) = FINALS[(u - T_BASE) as usize - 1];
        push(a, true);
        if b != 0 {
            push(b, false);
        }
    } else {
        jamo.push(n);
    }
}

/// Parse jamo into syllables, the way a Korean keyboard composes them.
fn parse(j: &[NChar], out: &mut Vec<NChar>) {
    let is_v_at = |k: usize| j.get(k).is_some_and(|n| is_v(n.c));
    let mut i = 0;
    while i < j.len() {
        if !(is_l(j[i].c) && is_v_at(i + 1)) {
            out.push(j[i]);
            i += 1;
            continue;
        }
        let l = u32::from(j[i].c) - L_BASE;
        let mut v = j[i + 1].c;
        let mut k = i + 2;
        if let Some(cv) = j.get(k).and_then(|n| compound_vowel(v, n.c)) {
            v = cv;
            k += 1;
        }
        // A consonant is a final only when no vowel follows it.
        let final_here = |k: usize| j.get(k).is_some_and(|n| is_l(n.c)) && !is_v_at(k + 1);
        let mut t = 0;
        if final_here(k) {
            if let Some(t1) = final_of(j[k].c) {
                t = t1;
                k += 1;
                if final_here(k) {
                    if let Some(t2) = compound_final(t1, j[k].c) {
                        t = t2;
                        k += 1;
                    }
                }
            }
        }
        let v = u32::from(v) - V_BASE;
        out.push(NChar {
            c: ch(S_BASE + (l * V_COUNT + v) * T_COUNT + t),
            end: j[k - 1].end,
            class: Class::Unspaced,
            ..j[i]
        });
        i = k;
    }
}

#[cfg(test)]
mod tests {
    use super::super::normalise::normalise;

    #[test]
    fn jamo_spelling_recomposes_into_syllables() {
        for (spelled, want) in [
            ("ㅁㅜㄹㅛ", "무료"),
            ("ㅁ ㅜ ㄹ ㅛ", "무료"),
            ("ㄷㅏㅇㅊㅓㅁ", "당첨"),
            ("ㄷ.ㅏ.ㅇ.ㅊ.ㅓ.ㅁ", "당첨"),
            ("ㅇㅣㄹㄱㅇㅓ", "읽어"),
            ("ㅎㅗㅏㄱㅇㅣㄴ", "확인"),
            ("ㄷㅏㅇ ㅊㅓㅁ", "당첨"),
            ("ㄷㅏ 처ㅁ", "다처ᄆ"),
            ("ㄳ", "ᄀᄉ"),
        ] {
            assert_eq!(normalise(spelled).text, want, "{spelled:?}");
        }
    }

    #[test]
    fn syllables_typed_as_syllables_are_never_recut() {
        assert_eq!(normalise("무료ㅋㅋ").text, "무료ᄏᄏ");
        assert_eq!(normalise("감사ㅋ").text, "감사ᄏ");
    }

    #[test]
    fn a_composed_syllable_maps_to_all_of_its_jamo() {
        let s = "ㅁ ㅜ ㄹ ㅛ!";
        let n = normalise(s);
        assert_eq!(n.text, "무료");
        assert_eq!(&s[n.map[0].clone()], "ㅁ ㅜ");
        assert_eq!(&s[n.map[1].clone()], "ㄹ ㅛ");
    }
}
