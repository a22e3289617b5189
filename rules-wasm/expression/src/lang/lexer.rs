//! Tokens: numbers (with units), strings, names and operators, with their byte
//! offsets for error positions.

use super::syntax::Error;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    Sym(&'static str),
    End,
}

pub(super) fn lex(src: &str) -> Result<Vec<(Tok, usize, usize)>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            // A comment runs to the end of the line.
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.' || bytes[i] == b'_') {
                i += 1;
            }
            let digits: String = src[start..i].chars().filter(|&c| c != '_').collect();
            let mut value: f64 =
                digits.parse().map_err(|_| Error::new(start, format!("{:?} is not a number", &src[start..i])))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            if i > unit_start {
                let unit = &src[unit_start..i];
                value *= unit_factor(unit).ok_or_else(|| {
                    Error::new(
                        unit_start,
                        format!("unknown unit {unit:?} (units: KB MB GB TB, KiB MiB GiB TiB, s m h d)"),
                    )
                })?;
            }
            out.push((Tok::Num(value), start, i));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(src[start..i].to_string()), start, i));
            continue;
        }
        if c == b'"' || c == b'\'' {
            let mut text = String::new();
            i += 1;
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return Err(Error::new(start, "this string is not closed"));
                };
                i += ch.len_utf8();
                match ch {
                    _ if ch as u32 == c as u32 => break,
                    '\\' => {
                        let Some(esc) = src[i..].chars().next() else {
                            return Err(Error::new(start, "this string is not closed"));
                        };
                        i += esc.len_utf8();
                        text.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    _ => text.push(ch),
                }
            }
            out.push((Tok::Str(text), start, i));
            continue;
        }
        let two = src.get(i..i + 2).unwrap_or("");
        let sym = ["&&", "||", ">=", "<=", "==", "!="].into_iter().find(|s| *s == two);
        let sym = match sym {
            Some(s) => s,
            None => match c {
                b'>' => ">",
                b'<' => "<",
                b'!' => "!",
                b'+' => "+",
                b'-' => "-",
                b'*' => "*",
                b'/' => "/",
                b'%' => "%",
                b'(' => "(",
                b')' => ")",
                b',' => ",",
                b'.' => ".",
                b'=' => return Err(Error::new(start, "`=` assigns nothing here: compare with `==`")),
                _ => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(Error::new(start, format!("unexpected character {ch:?}")));
                }
            },
        };
        i += sym.len();
        out.push((Tok::Sym(sym), start, i));
    }
    out.push((Tok::End, src.len(), src.len()));
    Ok(out)
}

fn unit_factor(unit: &str) -> Option<f64> {
    Some(match unit {
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    })
}
