//! A small text template: the prose of `BENCHMARKS.md` lives in
//! `loadbench/report-template.md`, and the run fills in its figures.
//!
//! - `{{name}}` is replaced by the value named `name`.
//! - A line that is exactly `{{#name}}` opens a block and `{{/name}}` closes
//!   it; the lines between are kept when the value `name` is not empty, and
//!   dropped otherwise. Blocks may nest.
//!
//! A name the values do not hold, a block left open and a closing line
//! without its opening are errors, so a typo in the template fails the run
//! (and the unit test that fills the shipped template) instead of printing
//! `{{nmae}}` into the report.

use std::fmt;

/// What is wrong with a template, with its line (counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Line of the template.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for Error {}

/// `template` with its placeholders replaced by `values` (name, text) and
/// its blocks kept or dropped.
///
/// # Errors
///
/// When the template names a value that `values` does not hold, or its
/// blocks do not pair up.
pub fn fill(template: &str, values: &[(&str, String)]) -> Result<String, Error> {
    let value = |name: &str, line: usize| {
        values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| Error {
                line,
                what: format!("no value named `{name}`"),
            })
    };
    let mut out = String::with_capacity(template.len() * 2);
    // The open blocks, innermost last, each with whether its lines are kept.
    let mut open: Vec<(&str, bool)> = Vec::new();
    for (i, text) in template.split_inclusive('\n').enumerate() {
        let line = i + 1;
        let bare = text.trim_end_matches(['\n', '\r']);
        if let Some(name) = block_tag(bare, "{{#") {
            let kept = !value(name, line)?.is_empty();
            open.push((name, kept));
            continue;
        }
        if let Some(name) = block_tag(bare, "{{/") {
            match open.pop() {
                Some((opened, _)) if opened == name => continue,
                Some((opened, _)) => {
                    return Err(Error {
                        line,
                        what: format!("`{{{{/{name}}}}}` closes `{{{{#{opened}}}}}`"),
                    })
                }
                None => {
                    return Err(Error {
                        line,
                        what: format!("`{{{{/{name}}}}}` without its opening"),
                    })
                }
            }
        }
        if open.iter().all(|(_, kept)| *kept) {
            substitute(text, line, &value, &mut out)?;
        }
    }
    if let Some((name, _)) = open.pop() {
        return Err(Error {
            line: template.lines().count(),
            what: format!("`{{{{#{name}}}}}` is never closed"),
        });
    }
    Ok(out)
}

/// The name in a line that is exactly `{{#name}}` (or `{{/name}}`).
fn block_tag<'a>(line: &'a str, open: &str) -> Option<&'a str> {
    let name = line.strip_prefix(open)?.strip_suffix("}}")?;
    is_name(name).then_some(name)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Appends `text` to `out`, each `{{name}}` replaced by its value.
fn substitute<'v>(
    text: &str,
    line: usize,
    value: &impl Fn(&str, usize) -> Result<&'v str, Error>,
    out: &mut String,
) -> Result<(), Error> {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| Error {
            line,
            what: "`{{` without `}}`".to_owned(),
        })?;
        let name = &after[..end];
        if !is_name(name) {
            return Err(Error {
                line,
                what: format!("`{{{{{name}}}}}` is not a placeholder"),
            });
        }
        out.push_str(value(name, line)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Vec<(&'static str, String)> {
        vec![
            ("a", "one".to_owned()),
            ("b", "two".to_owned()),
            ("none", String::new()),
        ]
    }

    #[test]
    fn placeholders_are_replaced() {
        assert_eq!(
            fill("{{a}} and {{b}}, {{a}}.\n", &values()).unwrap(),
            "one and two, one.\n"
        );
        assert_eq!(fill("no placeholder", &values()).unwrap(), "no placeholder");
    }

    #[test]
    fn blocks_are_kept_or_dropped() {
        let t = "x\n{{#a}}\nkept {{a}}\n{{#none}}\ndropped\n{{/none}}\n{{/a}}\n{{#none}}\n{{b}}\n{{/none}}\ny\n";
        assert_eq!(fill(t, &values()).unwrap(), "x\nkept one\ny\n");
    }

    #[test]
    fn mistakes_are_errors() {
        let e = fill("ok\n{{nmae}}\n", &values()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.what.contains("nmae"), "{e}");
        assert!(fill("{{a}\n", &values()).is_err());
        assert!(fill("{{ a }}\n", &values()).is_err());
        assert!(fill("{{#a}}\nopen\n", &values()).is_err());
        assert!(fill("{{/a}}\n", &values()).is_err());
        assert!(fill("{{#a}}\n{{#b}}\n{{/a}}\n{{/b}}\n", &values()).is_err());
        // A dropped block still names only known values.
        assert!(fill("{{#unknown}}\n{{/unknown}}\n", &values()).is_err());
    }
}
