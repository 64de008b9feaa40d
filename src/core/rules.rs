//! Which rule a machine gets, and why. The whole matching policy lives here:
//! selectors, precedence, the explanation printed by `pxed explain`, and the
//! ambiguity check run by `pxed check`.
//!
//! Precedence, highest first:
//! 1. `priority` (default 0; larger wins);
//! 2. specificity: the sum of the weights of the selector kinds a rule uses
//!    (mac 16, uuid 16, serial 8, product 4, manufacturer 2, arch 1), so a rule
//!    naming one machine beats a rule naming a machine type;
//! 3. file order, but only as a safety net: two rules that can match the same
//!    machine at equal priority and specificity are rejected as ambiguous.

use std::fmt;

use super::identity::{Arch, ClientString, Identity, Mac, Uuid};
use super::Location;

/// A case-insensitive shell-style pattern: `*` any run of characters, `?` one
/// character, everything else literal. Hand-written rather than taken from
/// `globset` because `pxed check` must decide whether two patterns can match a
/// common string, which no glob crate offers (see docs/decisions.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Star,
    AnyChar,
    Lit(char),
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let tokens = pattern
            .chars()
            .flat_map(char::to_lowercase)
            .map(|c| match c {
                '*' => Token::Star,
                '?' => Token::AnyChar,
                c => Token::Lit(c),
            })
            .collect();
        Glob {
            source: pattern.to_string(),
            tokens,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
        // Classic two-pointer wildcard match with backtracking to the last star:
        // linear in practice, never exponential.
        let (mut t, mut p) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(Token::AnyChar) => {
                    t += 1;
                    p += 1;
                }
                Some(Token::Lit(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == Token::Star)
    }

    /// Whether some string matches both patterns.
    pub fn intersects(&self, other: &Glob) -> bool {
        let (a, b) = (&self.tokens, &other.tokens);
        let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, j)) = stack.pop() {
            let key = i * (b.len() + 1) + j;
            if std::mem::replace(&mut seen[key], true) {
                continue;
            }
            if i == a.len() && j == b.len() {
                return true;
            }
            let (x, y) = (a.get(i), b.get(j));
            if x == Some(&Token::Star) {
                stack.push((i + 1, j)); // the star matches nothing more
                if y.is_some() {
                    stack.push((i, j + 1)); // the star swallows what b[j] produces
                }
            }
            if y == Some(&Token::Star) {
                stack.push((i, j + 1));
                if x.is_some() {
                    stack.push((i + 1, j));
                }
            }
            if let (Some(x), Some(y)) = (x, y) {
                let both_emit_same_char = match (x, y) {
                    (Token::Lit(c), Token::Lit(d)) => c == d,
                    (Token::Star, _) | (_, Token::Star) => false,
                    _ => true,
                };
                if both_emit_same_char {
                    stack.push((i + 1, j + 1));
                }
            }
        }
        false
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

/// What a rule selects on. `None` means "any"; a list means "any of these".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub mac: Option<Vec<Mac>>,
    pub uuid: Option<Vec<Uuid>>,
    pub serial: Option<Vec<Glob>>,
    pub product: Option<Vec<Glob>>,
    pub manufacturer: Option<Vec<Glob>>,
    pub arch: Option<Vec<Arch>>,
}

impl Selectors {
    pub fn specificity(&self) -> u32 {
        [
            (self.mac.is_some(), 16),
            (self.uuid.is_some(), 16),
            (self.serial.is_some(), 8),
            (self.product.is_some(), 4),
            (self.manufacturer.is_some(), 2),
            (self.arch.is_some(), 1),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, w)| w)
        .sum()
    }

    pub fn is_catch_all(&self) -> bool {
        self.specificity() == 0
    }

    /// Whether every selector accepts the machine: `check` without building
    /// the reason, which formats the machine's value and the rule's list
    /// (rule selection for a new machine was ~13,000 instructions with the
    /// reasons, bench/callgrind.sh).
    pub fn matches(&self, id: &Identity) -> bool {
        fn exact<T: PartialEq>(want: &Option<Vec<T>>, have: Option<&T>) -> bool {
            want.as_ref()
                .map_or(true, |w| have.is_some_and(|v| w.contains(v)))
        }
        fn glob(want: &Option<Vec<Glob>>, have: Option<&ClientString>) -> bool {
            want.as_ref().map_or(true, |w| {
                have.is_some_and(|v| w.iter().any(|g| g.is_match(v.raw())))
            })
        }
        exact(&self.mac, id.mac.as_ref())
            && exact(&self.uuid, id.uuid.as_ref())
            && glob(&self.serial, id.serial.as_ref())
            && glob(&self.product, id.product.as_ref())
            && glob(&self.manufacturer, id.manufacturer.as_ref())
            && exact(&self.arch, id.arch.as_ref())
    }

    /// `Ok` when every selector accepts the machine, otherwise the first reason
    /// it does not.
    pub fn check(&self, id: &Identity) -> Result<(), Mismatch> {
        check_exact("mac", &self.mac, id.mac.as_ref())?;
        check_exact("uuid", &self.uuid, id.uuid.as_ref())?;
        check_glob("serial", &self.serial, id.serial.as_ref())?;
        check_glob("product", &self.product, id.product.as_ref())?;
        check_glob("manufacturer", &self.manufacturer, id.manufacturer.as_ref())?;
        check_exact("arch", &self.arch, id.arch.as_ref())?;
        Ok(())
    }

    /// Whether one machine could satisfy both selector sets. Kinds that only
    /// one side constrains never separate them.
    pub fn overlaps(&self, other: &Selectors) -> bool {
        fn lists<T>(a: &Option<Vec<T>>, b: &Option<Vec<T>>, meet: impl Fn(&T, &T) -> bool) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => a.iter().any(|x| b.iter().any(|y| meet(x, y))),
                _ => true,
            }
        }
        lists(&self.mac, &other.mac, |a, b| a == b)
            && lists(&self.uuid, &other.uuid, |a, b| a == b)
            && lists(&self.serial, &other.serial, Glob::intersects)
            && lists(&self.product, &other.product, Glob::intersects)
            && lists(&self.manufacturer, &other.manufacturer, Glob::intersects)
            && lists(&self.arch, &other.arch, |a, b| a == b)
    }
}

impl fmt::Display for Selectors {
    /// `product "Express5800/*", mac 52:54:00:12:34:56`; `any machine` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("mac", self.mac.as_deref().map(list)),
            ("uuid", self.uuid.as_deref().map(list)),
            ("serial", self.serial.as_deref().map(list)),
            ("product", self.product.as_deref().map(list)),
            ("manufacturer", self.manufacturer.as_deref().map(list)),
            ("arch", self.arch.as_deref().map(list)),
        ];
        let set: Vec<String> = parts
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
            .collect();
        if set.is_empty() {
            f.write_str("any machine")
        } else {
            f.write_str(&set.join("; "))
        }
    }
}

fn check_exact<T: PartialEq + fmt::Display>(
    kind: &'static str,
    want: &Option<Vec<T>>,
    have: Option<&T>,
) -> Result<(), Mismatch> {
    let Some(want) = want else { return Ok(()) };
    match have {
        None => Err(Mismatch::Missing(kind)),
        Some(v) if want.contains(v) => Ok(()),
        Some(v) => Err(Mismatch::Differs {
            kind,
            have: v.to_string(),
            want: list(want),
        }),
    }
}

fn check_glob(
    kind: &'static str,
    want: &Option<Vec<Glob>>,
    have: Option<&ClientString>,
) -> Result<(), Mismatch> {
    let Some(want) = want else { return Ok(()) };
    match have {
        None => Err(Mismatch::Missing(kind)),
        Some(v) if want.iter().any(|g| g.is_match(v.raw())) => Ok(()),
        Some(v) => Err(Mismatch::Differs {
            kind,
            have: format!("{:?}", v.safe()),
            want: list(want),
        }),
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a rule did not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The rule selects on this kind and the machine did not report it.
    Missing(&'static str),
    Differs {
        kind: &'static str,
        have: String,
        want: String,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::Missing(kind) => write!(f, "{kind}: the machine did not report one"),
            Mismatch::Differs { kind, have, want } => {
                write!(f, "{kind}: {have} is not one of {want}")
            }
        }
    }
}

/// One validated `[[rule]]`. The boot part is generic so that this module stays
/// about matching only.
#[derive(Debug, Clone)]
pub struct Rule<B> {
    pub name: String,
    pub priority: i32,
    pub selectors: Selectors,
    pub boot: B,
    /// Position in the file: the last tie-break, and where errors point.
    pub order: usize,
    pub location: Location,
}

impl<B> Rule<B> {
    /// Sort key: larger priority, then larger specificity, then earlier in file.
    fn precedence(&self) -> (std::cmp::Reverse<i32>, std::cmp::Reverse<u32>, usize) {
        (
            std::cmp::Reverse(self.priority),
            std::cmp::Reverse(self.selectors.specificity()),
            self.order,
        )
    }
}

#[cfg(test)]
thread_local! {
    /// How many times this thread matched a machine against rules: the unit
    /// tests use it to show that one packet or request is decided once.
    pub static SELECTIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Rules in precedence order, ready for matching.
#[derive(Debug, Clone)]
pub struct RuleSet<B> {
    rules: Vec<Rule<B>>,
}

/// Two rules that one machine could match at the same precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ambiguity {
    pub first: (String, Location),
    pub second: (String, Location),
}

impl fmt::Display for Ambiguity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {:?} and rule {:?} (at {}) can match the same machine with equal priority and specificity; give one of them a higher `priority` or narrow its `match`",
            self.second.0, self.first.0, self.first.1
        )
    }
}

impl<B> RuleSet<B> {
    pub fn new(mut rules: Vec<Rule<B>>) -> Result<RuleSet<B>, Vec<Ambiguity>> {
        rules.sort_by_key(Rule::precedence);
        let mut clashes = Vec::new();
        for (i, a) in rules.iter().enumerate() {
            for b in rules[i + 1..].iter() {
                if (a.priority, a.selectors.specificity())
                    != (b.priority, b.selectors.specificity())
                {
                    break; // sorted: no later rule shares a's precedence either
                }
                if a.selectors.overlaps(&b.selectors) {
                    let (first, second) = if a.order < b.order { (a, b) } else { (b, a) };
                    clashes.push(Ambiguity {
                        first: (first.name.clone(), first.location.clone()),
                        second: (second.name.clone(), second.location.clone()),
                    });
                }
            }
        }
        if clashes.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(clashes)
        }
    }

    /// Rules in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = &Rule<B>> {
        self.rules.iter()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn has_catch_all(&self) -> bool {
        self.rules.iter().any(|r| r.selectors.is_catch_all())
    }

    /// The rule at `index` in precedence order.
    pub fn get(&self, index: usize) -> Option<&Rule<B>> {
        self.rules.get(index)
    }

    /// The rule this machine gets.
    pub fn select(&self, id: &Identity) -> Option<&Rule<B>> {
        #[cfg(test)]
        SELECTIONS.with(|n| n.set(n.get() + 1));
        self.rules.iter().find(|r| r.selectors.matches(id))
    }

    /// Every rule in precedence order with its verdict, for `pxed explain`.
    pub fn explain(&self, id: &Identity) -> Explanation<'_, B> {
        let verdicts = self
            .rules
            .iter()
            .map(|r| (r, r.selectors.check(id)))
            .collect::<Vec<_>>();
        let winner = verdicts.iter().position(|(_, v)| v.is_ok());

        Explanation { verdicts, winner }
    }
}

pub struct Explanation<'a, B> {
    pub verdicts: Vec<(&'a Rule<B>, Result<(), Mismatch>)>,
    pub winner: Option<usize>,
}

impl<B> Explanation<'_, B> {
    pub fn winner(&self) -> Option<&Rule<B>> {
        self.winner.map(|i| self.verdicts[i].0)
    }
}

impl<B> fmt::Display for Explanation<'_, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.winner() {
            Some(r) => writeln!(f, "matched rule {:?} ({})", r.name, r.location)?,
            None => writeln!(f, "no rule matched: the machine gets the retry script")?,
        }
        writeln!(
            f,
            "rules in the order they are tried (priority, specificity, file order):"
        )?;
        for (i, (rule, verdict)) in self.verdicts.iter().enumerate() {
            let mark = match (Some(i) == self.winner, verdict) {
                (true, _) => "=> matched",
                (false, Ok(())) => "   also matches, but a rule above wins",
                (false, Err(_)) => "   no match",
            };
            write!(
                f,
                "{mark:<40} {:?} [priority {}, specificity {}] ({})",
                rule.name,
                rule.priority,
                rule.selectors.specificity(),
                rule.location
            )?;
            match verdict {
                Err(why) => writeln!(f, ": {why}")?,
                Ok(()) => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching_is_case_insensitive_and_anchored() {
        let g = Glob::new("Express5800/*");
        assert!(g.is_match("Express5800/i120Ra-e1 [N8100-1482Y]"));
        assert!(g.is_match("express5800/"));
        assert!(!g.is_match("xExpress5800/a"));
        assert!(Glob::new("a?c").is_match("abc"));
        assert!(!Glob::new("a?c").is_match("ac"));
        assert!(Glob::new("*a*b*").is_match("xxaxxbxx"));
        assert!(!Glob::new("*a*b").is_match("xxaxxbxx"));
        assert!(Glob::new("").is_match(""));
    }

    #[test]
    fn glob_intersection() {
        let i = |a: &str, b: &str| Glob::new(a).intersects(&Glob::new(b));
        assert!(i("Express*", "*5800*"));
        assert!(i("Express5800/*", "Express5800/i120*"));
        assert!(!i("Express*", "PowerEdge*"));
        assert!(!i("a*b", "*c"));
        assert!(i("a?c", "*b*"));
        assert!(!i("abc", "abd"));
        assert!(i("abc", "ABC"));
        assert!(i("*", ""));
        assert!(!i("?", ""));
    }

    /// `matches` (rule selection) agrees with `check` (pxed explain) for every
    /// rule of the fuzz fixture, which has a selector of every kind.
    #[test]
    fn matches_agrees_with_check() {
        let fixture =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixture/machines.toml");
        let config = crate::config::load(&fixture).unwrap();
        let queries = [
            "product=Express5800%2Fi120Ra-e1&mac=52:54:00:12:34:01",
            "serial=SN-42-1&manufacturer=NEC%20Corp&mac=52:54:00:12:34:02",
            "serial=SN-52-1&manufacturer=NEC&mac=52:54:00:12:34:03",
            "mac=52:54:00:12:34:99&platform=efi&buildarch=x86_64",
            "mac=52:54:00:00:00:bb&uuid=4c4c4544-0035-3610-8048-b4c04f4e5931",
            "mac=52:54:00:12:34:56",
            "product=",
        ];
        let mut matched = 0;
        for q in queries {
            let id = Identity::from_query(q).unwrap();
            for r in config.policy.rules.iter() {
                assert_eq!(
                    r.selectors.matches(&id),
                    r.selectors.check(&id).is_ok(),
                    "{q} {}",
                    r.name
                );
                matched += usize::from(r.selectors.matches(&id));
            }
        }
        assert!(matched >= queries.len() + 5, "{matched}");
    }
}
