//! Reading `machines.toml` into the wire types with every type error and
//! unknown key reported, not only the first. serde stops at the first
//! problem, so after each one the offending line is blanked (spaces, so
//! every later offset, line and column stays true) and the file is read
//! again. A TOML syntax error stops at once: past it nothing is reliable.
//! Messages are put in the operator's words (`expected a whole number`,
//! not serde's `expected i32`).

use super::{wire, Loader};

/// Enough for any real file; bounds the re-reads of a hostile one.
const MAX_ERRORS: usize = 50;

impl Loader<'_> {
    pub(super) fn parse(&mut self) -> Option<wire::File> {
        if let Err(e) = self.text.parse::<toml::Table>() {
            self.error_at(e.span().map_or(0, |s| s.start), plain(e.message()));
            return None;
        }
        let first = self.errors.len();
        let wire = self.parse_all();
        // Found in serde's order; told in the file's.
        self.errors[first..].sort_by_key(|e| (e.location.line, e.location.column));
        wire
    }

    fn parse_all(&mut self) -> Option<wire::File> {
        let mut text = self.text.to_string();
        let mut last = None;
        for _ in 0..MAX_ERRORS {
            let e = match toml::from_str::<wire::File>(&text) {
                Ok(w) if last.is_none() => return Some(w),
                Ok(_) => return None,
                Err(e) => e,
            };
            let offset = e.span().map_or(0, |s| s.start);
            if last == Some(offset) {
                return None;
            }
            last = Some(offset);
            self.error_at(offset, plain(e.message()));
            if !blank_line(&mut text, offset) {
                return None;
            }
        }
        None
    }
}

/// Blanks the line holding `offset`, if that leaves valid TOML: not a table
/// header (its keys would move to the table before) nor part of a value
/// spanning lines.
fn blank_line(text: &mut String, offset: usize) -> bool {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    if line.is_empty() || line.starts_with('[') {
        return false;
    }
    let mut blanked = text.clone();
    blanked.replace_range(start..end, &" ".repeat(end - start));
    if blanked.parse::<toml::Table>().is_err() {
        return false;
    }
    *text = blanked;
    true
}

/// serde's type names, in words.
fn plain(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected i8", "expected a whole number"),
        ("expected i16", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected u8", "expected a whole number, 0 or more"),
        ("expected u16", "expected a whole number, 0 or more"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a sequence", "expected a list [ … ]"),
        ("expected a map", "expected a table { … }"),
        ("invalid type: integer", "invalid type: the number"),
        ("invalid type: string", "invalid type: the string"),
        ("invalid type: boolean", "invalid type: the boolean"),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: a table"),
        ("invalid value: integer", "invalid value:"),
    ];
    let mut out = message.trim_end().to_string();
    for (from, to) in WORDS {
        out = out.replace(from, to);
    }
    if let Some(i) = out.find("expected struct ") {
        out.replace_range(i.., "expected a table { … }");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_jargon_becomes_words() {
        assert_eq!(
            plain("invalid type: string \"high\", expected i32"),
            "invalid type: the string \"high\", expected a whole number"
        );
        assert_eq!(
            plain("invalid value: integer `-1`, expected u32"),
            "invalid value: `-1`, expected a whole number, 0 or more"
        );
        assert_eq!(
            plain("invalid type: integer `5`, expected struct Console"),
            "invalid type: the number `5`, expected a table { … }"
        );
    }

    #[test]
    fn a_multiline_value_is_not_blanked() {
        let mut text = "a = [\n  1,\n  2,\n]\n".to_string();
        assert!(
            !blank_line(&mut text, 0),
            "the rest of the list would be left alone"
        );
        let mut text = "[x]\nb = 1\n".to_string();
        assert!(!blank_line(&mut text, 1));
        assert!(blank_line(&mut text, 5));
        assert_eq!(text, "[x]\n     \n");
    }
}
