//! Expression rules: a `<name>.toml` in the rules directory with a `when` condition
//! and no `<name>.wasm` beside it runs the built-in expression component
//! (`rules-wasm/expression`) with those settings. The condition is parsed and
//! evaluated inside the sandbox like any rule's logic; this module only finds such
//! files and puts the component's error positions (relative to the setting's text)
//! back into the file's own lines and columns.

/// The expression component, built from `rules-wasm/expression` (CI checks that this
/// file matches its source).
pub fn component() -> &'static [u8] {
    crate::embedded::expression_wasm()
}

/// Settings with a condition: what makes a lone `.toml` an expression rule.
pub fn has_condition(values: &std::collections::HashMap<String, String>) -> bool {
    values.contains_key("when")
}

/// Text meant as a condition, even if it does not parse (then its TOML error is
/// the rule's error, not a reason to ignore the file): a line setting `when`.
pub fn mentions_condition(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim_start().trim_start_matches(['"', '\'']);
        l.strip_prefix("when").is_some_and(|rest| rest.trim_start_matches(['"', '\'']).trim_start().starts_with('='))
    })
}

/// Rewrite the component's `KEY: line L, column C: what` (a position in the value of
/// setting KEY) as `line L', column C' (in KEY): what` in the settings file's
/// coordinates. Other messages come back unchanged.
pub fn locate(file_text: &str, message: &str) -> String {
    locate_in(file_text, message).unwrap_or_else(|| message.to_string())
}

fn locate_in(file_text: &str, message: &str) -> Option<String> {
    let (key, rest) = message.split_once(": line ")?;
    let (line, rest) = rest.split_once(", column ")?;
    let (column, what) = rest.split_once(": ")?;
    let (line, column): (usize, usize) = (line.parse().ok()?, column.parse().ok()?);
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let start = value_start(file_text, key)?;
    // Walk the value's text to the component's line and column. Exact for literal
    // strings ('...', '''...''') and escape-free basic strings, the usual case.
    let mut at = start;
    let (mut l, mut c) = (1, 1);
    for ch in file_text[start..].chars() {
        if (l, c) == (line, column) {
            break;
        }
        if ch == '\n' {
            l += 1;
            c = 1;
        } else {
            c += 1;
        }
        at += ch.len_utf8();
    }
    let before = &file_text[..at];
    let file_line = before.matches('\n').count() + 1;
    let file_column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some(format!("line {file_line}, column {file_column} (in {key}): {what}"))
}

/// Byte offset where the text of `key`'s string value starts in a TOML file.
fn value_start(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let after_key = trimmed
            .strip_prefix(key)
            .or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| trimmed.strip_prefix(&format!("'{key}'")));
        if let Some(after) = after_key {
            let after_eq = after.trim_start().strip_prefix('=')?;
            let value = after_eq.trim_start();
            let mut at = offset + indent + (trimmed.len() - value.len());
            for quote in ["'''", "\"\"\"", "'", "\""] {
                if let Some(inner) = value.strip_prefix(quote) {
                    at += quote.len();
                    // A newline right after a multi-line opener is not part of the value.
                    if quote.len() == 3 && inner.starts_with('\n') {
                        at += 1;
                    } else if quote.len() == 3 && inner.starts_with("\r\n") {
                        at += 2;
                    }
                    return Some(at);
                }
            }
            return None;
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_move_into_the_file() {
        let file = "# disk and memory\nwhen = 'memory.usd_percent > 90'\nfor = \"2m\"\n";
        assert_eq!(
            locate(file, "when: line 1, column 8: memory has no field `usd_percent`"),
            "line 2, column 16 (in when): memory has no field `usd_percent`"
        );
        let multi = "subject = \"x\"\nwhen = '''\n  memory.used_percent > 90\n  and cpu.usd > 1\n'''\n";
        assert_eq!(
            locate(multi, "when: line 2, column 11: cpu has no field"),
            "line 4, column 11 (in when): cpu has no field"
        );
        // Not a positioned message, or a key that is not in the file: unchanged.
        assert_eq!(locate(file, "`when` is missing"), "`when` is missing");
        assert_eq!(locate(file, "subject: line 1, column 2: x"), "subject: line 1, column 2: x");
    }

    #[test]
    fn conditions_are_recognised_before_parsing() {
        assert!(mentions_condition("# x\n  when = 'broken"));
        assert!(mentions_condition("\"when\" = 1"));
        assert!(!mentions_condition("# alert when memory is high\nmemory_percent = 80"));
        assert!(!mentions_condition("whenever = 1"));
    }
}
