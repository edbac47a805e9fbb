//! The sensitive-word filter on every outbound message (R7). Compliance keeps
//! a list of high-risk terms ("free", "winner", "무료", "당첨", "免费", "中奖");
//! an outbound message containing one, however disguised, is refused before
//! sending, naming the term as configured. The list is a file that can be
//! edited while the daemon runs ([`FilterSet`]).
//!
//! # Terms file
//! UTF-8, one term per line; surrounding whitespace is trimmed, blank lines
//! are ignored, a line whose first non-blank character is `#` is a comment
//! (so a term cannot start with `#`; there are no end-of-line comments). A
//! term that normalises to nothing ("!!!", "🎁") is an error naming its line.
//! Terms that normalise alike ("Free", "FREE") count once, under the first
//! spelling.
//!
//! # Normalisation
//! Terms and messages go through the same [`normalise`]: NFKC, full case
//! folding, then only letters and digits are kept (details and the exact
//! removed set in `filter/normalise.rs`), so "F.R.E.E", "ｆｒｅｅ",
//! "fr\u{200b}ee" and "Ｆ Ｒ Ｅ Ｅ" all read "free". Every normalised char
//! remembers the byte range it came from, so a [`Match`] names the original
//! span.
//!
//! - **Korean**: NFKC composes conjoining jamo into syllables. Compatibility
//!   jamo *are* matched: "ㅁㅜㄹㅛ", "ㅁ ㅜ ㄹ ㅛ" and "ㄷㅏㅇㅊㅓㅁ" are
//!   recomposed into "무료" and "당첨" (`filter/hangul.rs`), because spelling a
//!   word out in jamo is the Korean form of letter spacing. Text typed as
//!   syllables is never re-cut ("무료ㅋㅋ" is "무료" then laughter).
//! - **Chinese**: traditional and simplified characters are different
//!   characters and are not converted into each other (a table conversion is
//!   not one-to-one and would bring false matches); list both forms ("免费",
//!   "免費"). NFKC already maps compatibility ideographs and Kangxi radicals
//!   ("⼤" → "大").
//!
//! # The boundary rule
//! Ignoring every separator would make "free" match "carefree" and
//! "if reeds". So a match must line up with the words of the original text:
//!
//! 1. **Tokens.** The original text is cut into tokens at every *visible*
//!    character that is not a letter or digit (space, punctuation, symbol,
//!    emoji, apostrophe) and wherever the kind of character changes between
//!    letters of scripts that separate words (Latin, Cyrillic, Greek, Arabic,
//!    Devanagari, ...), digits, and letters of scripts written without
//!    spaces or whose words carry particles (Han, Hangul, kana, Thai, Lao,
//!    Khmer, ...). *Invisible* characters (zero-width space and joiners, word
//!    joiner, BOM, soft hyphen, bidi controls, variation selectors, combining
//!    marks, tatweel, Hangul fillers) do not cut: inserting them is a
//!    disguise, not a word break.
//! 2. **Edges.** A match is accepted when its first char starts a token or is
//!    a letter of a script without spaces, **and** its last char ends a token
//!    or is a letter of a script without spaces. A match may span several
//!    tokens: letter-spaced text is a run of one-letter tokens, and a term of
//!    several words ("click here") matches the words.
//!
//! | text | term | verdict | why |
//! |---|---|---|---|
//! | `f r e e`, `F.R.E.E`, `f-r-e-e`, `fr ee` | free | match | whole tokens |
//! | `FREE!!!`, `(free)`, `free-for-all` | free | match | punctuation cuts |
//! | `fr\u{200b}ee`, `f\u{ad}ree` | free | match | one token "free" |
//! | `Get a F R E E gift`, `I a m f r e e` | free | match | one-letter tokens |
//! | `100% free`, `free2play`, `무료free` | free | match | kind changes cut |
//! | `🎁fr🎉ee` | free | match | emoji cut; the span covers the emoji |
//! | `carefree`, `freedom`, `if reeds` | free | none | starts or ends inside a token |
//! | `care\u{200b}free` | free | none | zero-width does not cut: one token |
//! | `f r e e d o m` | free | **match** | letter-spaced text has no word edges; flagged on purpose |
//! | `it's ex…` | sex | **match** | whole tokens "s", "ex": a known false positive |
//! | `무료로`, `당첨되었습니다`, `免费送`, `中奖了` | 무료, 당첨, 免费, 中奖 | match | no edges in these scripts |
//! | `무료하다` (to be bored) | 무료 | **match** | a homograph: substring matching cannot tell |
//! | `免費` | 免费 | none | traditional ≠ simplified: list both |
//! | `frée`, `fr3e`, `frее` (Cyrillic е) | free | none | accents, leetspeak, look-alike letters: out of scope |
//!
//! The brief's first idea was to join one-letter tokens into one word. It
//! would spare `f r e e d o m`, but it would miss `Get a F R E E gift` (the
//! article joins the term: "afree"), the common form of the disguise; so
//! letter-spaced text is taken letter by letter.
//!
//! Out of scope, and not cheap to do without false matches: leetspeak
//! (`fr3e`: mapping digits to letters would also turn prices into words),
//! look-alike letters from other scripts, diacritics ("frée": NFKC keeps
//! them, as specified). Compliance can list such variants as terms.
//!
//! # Cost
//! The terms are compiled once per list into one Aho-Corasick automaton
//! (`aho-corasick`, standard semantics, overlapping search so that a rejected
//! candidate never hides an accepted one). A check normalises the message into
//! a thread-local buffer (no allocation once warm; ASCII and CJK take fast
//! paths) and walks the automaton once. Counted: each refused message in
//! `switchboard_filter_blocked_total`; nothing from the message is a label.

mod hangul;
mod normalise;
mod set;

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};

pub use normalise::{normalise, Normalised};
pub use set::{FilterSet, WatcherGuard, DEFAULT_WATCH_INTERVAL};

use crate::telemetry::names;
use normalise::{Class, Scratch};

/// A term found in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The term as configured (trimmed).
    pub term: String,
    /// Byte range in the original text: `&text[start..end]` is the disguised
    /// term (with whatever separators it holds).
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("{}: cannot read the sensitive-word list: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: the sensitive-word list is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{}: term {term:?} has no letter or digit once normalised", place(path.as_deref(), *line))]
    EmptyTerm {
        /// The file, when the list came from one.
        path: Option<PathBuf>,
        /// Line in the file (1-based), or position in the list given.
        line: usize,
        term: String,
    },
    #[error("building the matcher for {terms} terms: {source}")]
    Build {
        terms: usize,
        #[source]
        source: aho_corasick::BuildError,
    },
}

fn place(path: Option<&Path>, line: usize) -> String {
    match path {
        Some(p) => format!("{}:{line}", p.display()),
        None => format!("term {line}"),
    }
}

/// A compiled list of sensitive terms. Immutable; [`FilterSet`] swaps whole
/// filters on reload.
pub struct Filter {
    /// None for an empty list.
    matcher: Option<AhoCorasick>,
    /// Configured spelling of each pattern, by pattern id.
    terms: Vec<String>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("terms", &self.terms.len())
            .finish()
    }
}

impl Default for Filter {
    /// The empty list: nothing is refused.
    fn default() -> Filter {
        Filter {
            matcher: None,
            terms: Vec::new(),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl Filter {
    /// Compile `terms` (each trimmed). An error names the term's position
    /// (1-based).
    pub fn from_terms<I, S>(terms: I) -> Result<Filter, FilterError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries: Vec<(usize, S)> = terms
            .into_iter()
            .enumerate()
            .map(|(i, t)| (i + 1, t))
            .collect();
        Self::build(
            entries.iter().map(|(line, t)| (*line, t.as_ref().trim())),
            None,
        )
    }

    /// Read and compile a terms file (format in the module docs).
    pub fn load(path: impl AsRef<Path>) -> Result<Filter, FilterError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| FilterError::Read {
            path: path.to_owned(),
            source,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| FilterError::NotUtf8 {
            path: path.to_owned(),
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
        })?;
        Self::parse(text, Some(path))
    }

    /// Compile the text of a terms file; `path` only names it in errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Filter, FilterError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let lines = text
            .split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        Self::build(lines, path)
    }

    fn build<'a>(
        entries: impl Iterator<Item = (usize, &'a str)>,
        path: Option<&Path>,
    ) -> Result<Filter, FilterError> {
        let mut seen = HashSet::new();
        let mut patterns = Vec::new();
        let mut terms = Vec::new();
        for (line, term) in entries {
            let norm = normalise(term).text;
            if norm.is_empty() {
                return Err(FilterError::EmptyTerm {
                    path: path.map(Path::to_owned),
                    line,
                    term: term.to_owned(),
                });
            }
            if seen.insert(norm.clone()) {
                patterns.push(norm);
                terms.push(term.to_owned());
            }
        }
        if patterns.is_empty() {
            return Ok(Filter::default());
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .or_else(|_| {
                // A DFA too large for its limits: the NFA is slower, not wrong.
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&patterns)
            })
            .map_err(|source| FilterError::Build {
                terms: patterns.len(),
                source,
            })?;
        Ok(Filter {
            matcher: Some(matcher),
            terms,
        })
    }

    /// Distinct terms in the list.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms as configured, in file order (duplicates removed).
    pub fn terms(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(String::as_str)
    }

    /// The first term (by where it ends) that `text` contains under the
    /// boundary rule, or None when the message may be sent. Counts a refusal
    /// in `switchboard_filter_blocked_total`.
    pub fn check(&self, text: &str) -> Option<Match> {
        let matcher = self.matcher.as_ref()?;
        let found = SCRATCH.with(|cell| {
            // A nested check cannot happen (nothing here calls out), but a
            // fresh buffer beats a panic if it ever did.
            let mut fresh;
            let mut guard = cell.try_borrow_mut();
            let scratch: &mut Scratch = match guard.as_deref_mut() {
                Ok(s) => s,
                Err(_) => {
                    fresh = Scratch::default();
                    &mut fresh
                }
            };
            scratch.normalise(text);
            let found = self.find(matcher, scratch);
            scratch.trim();
            found
        });
        if found.is_some() {
            metrics::counter!(names::FILTER_BLOCKED).increment(1);
        }
        found
    }

    fn find(&self, matcher: &AhoCorasick, s: &Scratch) -> Option<Match> {
        if s.text.is_empty() {
            return None;
        }
        matcher
            .find_overlapping_iter(s.text.as_str())
            .find_map(|m| {
                let first = s.char_index(m.start());
                let last = s.char_index(m.end() - 1);
                accepted(s, first, last).then(|| Match {
                    term: self.terms[m.pattern().as_usize()].clone(),
                    start: s.chars[first].start,
                    end: s.chars[last].end,
                })
            })
    }
}

/// The boundary rule (module docs): the match's first char starts a token
/// and its last char ends one, except for letters of scripts without spaces.
fn accepted(s: &Scratch, first: usize, last: usize) -> bool {
    let start_ok = s.chars[first].class == Class::Unspaced || s.chars[first].boundary_before;
    let end_ok = s.chars[last].class == Class::Unspaced
        || s.chars.get(last + 1).is_none_or(|n| n.boundary_before);
    start_ok && end_ok
}

#[cfg(test)]
mod tests;
