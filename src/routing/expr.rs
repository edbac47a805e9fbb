//! Skill expressions: `lang:ko AND (billing OR NOT sales)`.
//!
//! Grammar (keywords case-insensitive, NOT binds tighter than AND, AND
//! tighter than OR):
//!
//! ```text
//! expr  := and ("OR" and)*
//! and   := unary ("AND" unary)*
//! unary := "NOT" unary | "(" expr ")" | skill
//! skill := a run of characters other than whitespace, '(', ')' and '"',
//!          that is not a keyword | '"' any characters but '"' '"'
//! ```
//!
//! Invariants:
//! - Parsing is bounded: at most [`MAX_EXPR_LEN`] bytes and [`MAX_DEPTH`]
//!   levels of nesting, so hostile input cannot exhaust the stack.
//! - `parse(expr.to_string()) == expr` for every expression (Display is
//!   canonical: it quotes what needs quoting and parenthesises every nested
//!   AND/OR), so the canonical text is what snapshots store.
//! - Errors name the byte offset where the input stopped making sense.

use std::collections::BTreeSet;
use std::fmt;

/// Longest accepted expression, in bytes.
pub const MAX_EXPR_LEN: usize = 1024;
/// Deepest accepted nesting of parentheses and NOT.
pub const MAX_DEPTH: usize = 32;

/// A parsed skill expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SkillExpr {
    Skill(String),
    Not(Box<SkillExpr>),
    /// Two or more operands, all of which must match.
    And(Vec<SkillExpr>),
    /// Two or more operands, one of which must match.
    Or(Vec<SkillExpr>),
}

/// Why a skill expression did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("empty skill expression")]
    Empty,
    #[error("skill expression is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("at byte {at}: expected a skill, NOT or '(' but found {found}")]
    ExpectedOperand { at: usize, found: String },
    #[error("at byte {at}: expected AND, OR or the end but found {found}")]
    ExpectedOperator { at: usize, found: String },
    #[error("'(' at byte {at} is never closed")]
    UnclosedParen { at: usize },
    #[error("at byte {at}: ')' without a matching '('")]
    UnmatchedParen { at: usize },
    #[error("quote at byte {at} is never closed")]
    UnterminatedQuote { at: usize },
    #[error("at byte {at}: empty quoted skill")]
    EmptySkill { at: usize },
    #[error("at byte {at}: nesting deeper than {max}")]
    TooDeep { at: usize, max: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    And,
    Or,
    Not,
    Skill(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
            Tok::And => "AND".into(),
            Tok::Or => "OR".into(),
            Tok::Not => "NOT".into(),
            Tok::Skill(s) => format!("skill {s:?}"),
        }
    }
}

fn is_bare(c: char) -> bool {
    !c.is_whitespace() && c != '(' && c != ')' && c != '"'
}

fn keyword(word: &str) -> Option<Tok> {
    if word.eq_ignore_ascii_case("and") {
        Some(Tok::And)
    } else if word.eq_ignore_ascii_case("or") {
        Some(Tok::Or)
    } else if word.eq_ignore_ascii_case("not") {
        Some(Tok::Not)
    } else {
        None
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some(&(at, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '(' {
            it.next();
            out.push((at, Tok::Open));
        } else if c == ')' {
            it.next();
            out.push((at, Tok::Close));
        } else if c == '"' {
            it.next();
            let start = at + 1;
            let end = loop {
                match it.next() {
                    Some((i, '"')) => break i,
                    Some(_) => {}
                    None => return Err(ExprError::UnterminatedQuote { at }),
                }
            };
            if end == start {
                return Err(ExprError::EmptySkill { at });
            }
            out.push((at, Tok::Skill(src[start..end].to_string())));
        } else {
            let mut end = src.len();
            while let Some(&(i, c)) = it.peek() {
                if !is_bare(c) {
                    end = i;
                    break;
                }
                it.next();
            }
            let word = &src[at..end];
            out.push((at, keyword(word).unwrap_or_else(|| Tok::Skill(word.into()))));
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.toks.get(self.pos)
    }

    fn at(&self) -> usize {
        self.peek().map_or(self.end, |t| t.0)
    }

    fn or(&mut self, depth: usize) -> Result<SkillExpr, ExprError> {
        let mut items = vec![self.and(depth)?];
        while matches!(self.peek(), Some((_, Tok::Or))) {
            self.pos += 1;
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(SkillExpr::Or(Vec::new()))
        } else {
            SkillExpr::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<SkillExpr, ExprError> {
        let mut items = vec![self.unary(depth)?];
        while matches!(self.peek(), Some((_, Tok::And))) {
            self.pos += 1;
            items.push(self.unary(depth)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(SkillExpr::And(Vec::new()))
        } else {
            SkillExpr::And(items)
        })
    }

    fn unary(&mut self, depth: usize) -> Result<SkillExpr, ExprError> {
        let at = self.at();
        if depth >= MAX_DEPTH {
            return Err(ExprError::TooDeep { at, max: MAX_DEPTH });
        }
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(ExprError::ExpectedOperand {
                at,
                found: "the end".into(),
            });
        };
        self.pos += 1;
        match tok {
            Tok::Skill(s) => Ok(SkillExpr::Skill(s)),
            Tok::Not => Ok(SkillExpr::Not(Box::new(self.unary(depth + 1)?))),
            Tok::Open => {
                let inner = self.or(depth + 1)?;
                match self.peek() {
                    Some((_, Tok::Close)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some((p, t)) => Err(ExprError::ExpectedOperator {
                        at: *p,
                        found: t.describe(),
                    }),
                    None => Err(ExprError::UnclosedParen { at }),
                }
            }
            other => Err(ExprError::ExpectedOperand {
                at,
                found: other.describe(),
            }),
        }
    }
}

impl SkillExpr {
    /// Parse `src` (see the module grammar).
    pub fn parse(src: &str) -> Result<SkillExpr, ExprError> {
        if src.len() > MAX_EXPR_LEN {
            return Err(ExprError::TooLong { max: MAX_EXPR_LEN });
        }
        let toks = lex(src)?;
        if toks.is_empty() {
            return Err(ExprError::Empty);
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: src.len(),
        };
        let expr = p.or(0)?;
        match p.peek() {
            None => Ok(expr),
            Some((at, Tok::Close)) => Err(ExprError::UnmatchedParen { at: *at }),
            Some((at, t)) => Err(ExprError::ExpectedOperator {
                at: *at,
                found: t.describe(),
            }),
        }
    }

    /// Whether an agent with `skills` matches.
    pub fn matches(&self, skills: &BTreeSet<String>) -> bool {
        match self {
            SkillExpr::Skill(s) => skills.contains(s),
            SkillExpr::Not(e) => !e.matches(skills),
            SkillExpr::And(v) => v.iter().all(|e| e.matches(skills)),
            SkillExpr::Or(v) => v.iter().any(|e| e.matches(skills)),
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkillExpr::And(_) | SkillExpr::Or(_) => write!(f, "({self})"),
            _ => write!(f, "{self}"),
        }
    }
}

impl fmt::Display for SkillExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkillExpr::Skill(s) => {
                if s.chars().all(is_bare) && !s.is_empty() && keyword(s).is_none() {
                    f.write_str(s)
                } else {
                    write!(f, "\"{s}\"")
                }
            }
            SkillExpr::Not(e) => {
                f.write_str("NOT ")?;
                e.fmt_operand(f)
            }
            SkillExpr::And(v) | SkillExpr::Or(v) => {
                let op = if matches!(self, SkillExpr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, e) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    e.fmt_operand(f)?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn skills(s: &[&str]) -> BTreeSet<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn sk(s: &str) -> SkillExpr {
        SkillExpr::Skill(s.into())
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        let e = SkillExpr::parse("a OR b AND NOT c").unwrap();
        assert_eq!(
            e,
            SkillExpr::Or(vec![
                sk("a"),
                SkillExpr::And(vec![sk("b"), SkillExpr::Not(Box::new(sk("c")))])
            ])
        );
        let e = SkillExpr::parse("(a or b) and not (c)").unwrap();
        assert_eq!(
            e,
            SkillExpr::And(vec![
                SkillExpr::Or(vec![sk("a"), sk("b")]),
                SkillExpr::Not(Box::new(sk("c")))
            ])
        );
        assert_eq!(e.to_string(), "(a OR b) AND NOT c");
    }

    #[test]
    fn evaluates_against_skill_sets() {
        let e = SkillExpr::parse("lang:ko AND (billing OR NOT sales)").unwrap();
        assert!(e.matches(&skills(&["lang:ko", "billing", "sales"])));
        assert!(e.matches(&skills(&["lang:ko"])));
        assert!(!e.matches(&skills(&["lang:ko", "sales"])));
        assert!(!e.matches(&skills(&["billing"])));
        let q = SkillExpr::parse(r#""team lead" AND "and""#).unwrap();
        assert!(q.matches(&skills(&["team lead", "and"])));
        assert_eq!(q.to_string(), r#""team lead" AND "and""#);
        assert!(SkillExpr::parse("NOT NOT x")
            .unwrap()
            .matches(&skills(&["x"])));
    }

    #[test]
    fn errors_name_the_position() {
        use ExprError::*;
        assert_eq!(SkillExpr::parse("  "), Err(Empty));
        assert_eq!(
            SkillExpr::parse("a AND"),
            Err(ExpectedOperand {
                at: 5,
                found: "the end".into()
            })
        );
        assert_eq!(
            SkillExpr::parse("a b"),
            Err(ExpectedOperator {
                at: 2,
                found: "skill \"b\"".into()
            })
        );
        assert_eq!(SkillExpr::parse("(a OR b"), Err(UnclosedParen { at: 0 }));
        assert_eq!(SkillExpr::parse("a)"), Err(UnmatchedParen { at: 1 }));
        assert_eq!(
            SkillExpr::parse("a AND \"x"),
            Err(UnterminatedQuote { at: 6 })
        );
        assert_eq!(SkillExpr::parse("\"\""), Err(EmptySkill { at: 0 }));
        assert_eq!(
            SkillExpr::parse("OR a"),
            Err(ExpectedOperand {
                at: 0,
                found: "OR".into()
            })
        );
        assert_eq!(
            SkillExpr::parse("()"),
            Err(ExpectedOperand {
                at: 1,
                found: "')'".into()
            })
        );
        let deep = format!("{}a{}", "(".repeat(40), ")".repeat(40));
        assert!(matches!(SkillExpr::parse(&deep), Err(TooDeep { .. })));
        let nots = format!("{}a", "NOT ".repeat(40));
        assert!(matches!(SkillExpr::parse(&nots), Err(TooDeep { .. })));
        let long = vec!["x"; 600].join(" OR ");
        assert_eq!(SkillExpr::parse(&long), Err(TooLong { max: MAX_EXPR_LEN }));
        // The message is useful as it stands.
        assert_eq!(
            SkillExpr::parse("a b").unwrap_err().to_string(),
            "at byte 2: expected AND, OR or the end but found skill \"b\""
        );
    }

    fn arb_expr() -> impl Strategy<Value = SkillExpr> {
        let leaf = prop_oneof![
            "[a-z]{1,3}(:[a-z]{2})?".prop_map(SkillExpr::Skill),
            Just(SkillExpr::Skill("or".into())),
            Just(SkillExpr::Skill("two words".into())),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| SkillExpr::Not(Box::new(e))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(SkillExpr::And),
                prop::collection::vec(inner, 2..4).prop_map(SkillExpr::Or),
            ]
        })
    }

    proptest! {
        #[test]
        fn display_parses_back_to_the_same_expression(e in arb_expr()) {
            let text = e.to_string();
            prop_assert_eq!(SkillExpr::parse(&text), Ok(e));
        }

        #[test]
        fn parse_never_panics(s in "[a-z()\" ANDORT]{0,40}") {
            let _ = SkillExpr::parse(&s);
        }
    }
}
