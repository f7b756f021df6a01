//! A small SPDX license-expression checker: syntax (AND/OR/WITH, parentheses,
//! `+`, `LicenseRef-`/`DocumentRef-`) is an error when wrong; identifiers
//! outside the common list are only warnings (the full SPDX list is long and
//! changes).

const KNOWN: &[&str] = &[
    "0BSD",
    "AFL-3.0",
    "AGPL-3.0",
    "AGPL-3.0-only",
    "AGPL-3.0-or-later",
    "Apache-1.1",
    "Apache-2.0",
    "Artistic-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSD-3-Clause-Clear",
    "BSD-4-Clause",
    "BSL-1.0",
    "CC-BY-2.0",
    "CC-BY-3.0",
    "CC-BY-4.0",
    "CC-BY-NC-2.0",
    "CC-BY-NC-3.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-ND-3.0",
    "CC-BY-NC-ND-4.0",
    "CC-BY-NC-SA-2.0",
    "CC-BY-NC-SA-3.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-ND-4.0",
    "CC-BY-SA-3.0",
    "CC-BY-SA-4.0",
    "CC0-1.0",
    "CDDL-1.0",
    "CDLA-Permissive-1.0",
    "CDLA-Permissive-2.0",
    "CDLA-Sharing-1.0",
    "EPL-1.0",
    "EPL-2.0",
    "EUPL-1.2",
    "GFDL-1.3",
    "GPL-2.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.1",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "LLVM-exception",
    "MIT",
    "MIT-0",
    "MPL-1.1",
    "MPL-2.0",
    "MS-PL",
    "OFL-1.1",
    "OpenRAIL",
    "OSL-3.0",
    "PostgreSQL",
    "Python-2.0",
    "Unicode-3.0",
    "Unlicense",
    "UPL-1.0",
    "WTFPL",
    "Zlib",
    "Classpath-exception-2.0",
];

#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Ok,
    /// Syntax is fine but these identifiers are not in our list.
    Unknown(Vec<String>),
    Invalid(String),
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':'
}

pub fn check(expr: &str) -> Check {
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in expr.chars() {
        if c == '(' || c == ')' || c.is_whitespace() {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        } else if is_id_char(c) || c == '+' {
            cur.push(c);
        } else {
            return Check::Invalid(format!("unexpected character {c:?}"));
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    if tokens.is_empty() {
        return Check::Invalid("empty expression".into());
    }
    let mut unknown = Vec::new();
    let mut pos = 0;
    if let Err(e) = parse_or(&tokens, &mut pos, &mut unknown) {
        return Check::Invalid(e);
    }
    if pos != tokens.len() {
        return Check::Invalid(format!("unexpected {:?}", tokens[pos]));
    }
    if unknown.is_empty() {
        Check::Ok
    } else {
        Check::Unknown(unknown)
    }
}

fn parse_or(t: &[String], pos: &mut usize, unknown: &mut Vec<String>) -> Result<(), String> {
    parse_and(t, pos, unknown)?;
    while *pos < t.len() && t[*pos] == "OR" {
        *pos += 1;
        parse_and(t, pos, unknown)?;
    }
    Ok(())
}

fn parse_and(t: &[String], pos: &mut usize, unknown: &mut Vec<String>) -> Result<(), String> {
    parse_with(t, pos, unknown)?;
    while *pos < t.len() && t[*pos] == "AND" {
        *pos += 1;
        parse_with(t, pos, unknown)?;
    }
    Ok(())
}

fn parse_with(t: &[String], pos: &mut usize, unknown: &mut Vec<String>) -> Result<(), String> {
    parse_atom(t, pos, unknown)?;
    if *pos < t.len() && t[*pos] == "WITH" {
        *pos += 1;
        let e = t.get(*pos).ok_or("WITH needs an exception identifier")?;
        if ["AND", "OR", "WITH", "(", ")"].contains(&e.as_str()) {
            return Err(format!("WITH needs an exception identifier, got {e:?}"));
        }
        *pos += 1;
    }
    Ok(())
}

fn parse_atom(t: &[String], pos: &mut usize, unknown: &mut Vec<String>) -> Result<(), String> {
    let tok = t
        .get(*pos)
        .ok_or("expression ends where a license was expected")?;
    if tok == "(" {
        *pos += 1;
        parse_or(t, pos, unknown)?;
        if t.get(*pos).map(String::as_str) != Some(")") {
            return Err("missing ')'".into());
        }
        *pos += 1;
        return Ok(());
    }
    if ["AND", "OR", "WITH", ")"].contains(&tok.as_str()) {
        return Err(format!("unexpected {tok:?} where a license was expected"));
    }
    let id = tok.trim_end_matches('+');
    if !(id.starts_with("LicenseRef-")
        || id.starts_with("DocumentRef-")
        || KNOWN.iter().any(|k| k.eq_ignore_ascii_case(id)))
    {
        unknown.push(tok.clone());
    }
    *pos += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        assert_eq!(check("Apache-2.0"), Check::Ok);
        assert_eq!(check("MIT OR (Apache-2.0 AND BSD-3-Clause)"), Check::Ok);
        assert_eq!(
            check("GPL-2.0-or-later WITH Classpath-exception-2.0"),
            Check::Ok
        );
        assert_eq!(check("LicenseRef-llama3"), Check::Ok);
        assert!(matches!(check("llama3-community"), Check::Unknown(_)));
        for bad in [
            "",
            "MIT OR",
            "(MIT",
            "MIT AND AND BSD-2-Clause",
            "Apache 2.0 license!",
        ] {
            assert!(matches!(check(bad), Check::Invalid(_)), "{bad}");
        }
    }
}
