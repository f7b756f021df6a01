//! containerd filter syntax for `List`: `field==value`, `field!=value`,
//! `field` (present), clauses joined by `,` (and), several filters or'ed.
//! Fields: `name`, `parent`, `kind`, `labels.<key>` / `labels."<key>"`.

use crate::meta::{Kind, Record};

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    Present,
}

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    field: Vec<String>,
    op: Op,
}

fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == sep && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"")
    } else {
        s.to_string()
    }
}

fn parse_field(f: &str) -> Vec<String> {
    split_top(f.trim(), '.')
        .into_iter()
        .map(|p| unquote(&p))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(Vec::new(), |mut acc, p| {
            // `labels.containerd.io/snapshot.ref` without quotes: everything after `labels.` is the key.
            if acc.len() == 2 && acc[0] == "labels" {
                let last = acc.pop().unwrap();
                acc.push(format!("{last}.{p}"));
            } else {
                acc.push(p);
            }
            acc
        })
}

fn parse_clause(c: &str) -> Result<Clause, String> {
    for (tok, mk) in [("==", 0), ("!=", 1)] {
        if let Some((f, v)) = split_once_top(c, tok) {
            let v = unquote(v);
            return Ok(Clause {
                field: parse_field(f),
                op: if mk == 0 { Op::Eq(v) } else { Op::Ne(v) },
            });
        }
    }
    if c.contains("~=") {
        return Err(format!("regular-expression filters are not supported: {c}"));
    }
    Ok(Clause {
        field: parse_field(c),
        op: Op::Present,
    })
}

/// Splits at the first `tok` outside double quotes. Walks char boundaries
/// (`char_indices`), not byte offsets: filters come from containerd clients and
/// may hold any UTF-8, and slicing inside a multi-byte character panics.
fn split_once_top<'a>(s: &'a str, tok: &str) -> Option<(&'a str, &'a str)> {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && s[i..].starts_with(tok) {
            return Some((&s[..i], &s[i + tok.len()..]));
        }
    }
    None
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::View => "view",
        Kind::Active => "active",
        Kind::Committed => "committed",
    }
}

fn value(r: &Record, field: &[String]) -> Option<String> {
    match field.first().map(String::as_str) {
        Some("name") => Some(r.name.clone()),
        Some("parent") => Some(r.parent.clone()),
        Some("kind") => Some(kind_name(r.kind).into()),
        Some("labels") => field.get(1).and_then(|k| r.labels.get(k).cloned()),
        _ => None,
    }
}

/// Parses the filter strings once.
pub struct Filters(Vec<Vec<Clause>>);

impl Filters {
    pub fn parse(filters: &[String]) -> Result<Filters, String> {
        let mut all = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            all.push(
                split_top(f, ',')
                    .iter()
                    .map(|c| parse_clause(c.trim()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
        }
        Ok(Filters(all))
    }

    pub fn matches(&self, r: &Record) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|clauses| {
                clauses.iter().all(|c| match (&c.op, value(r, &c.field)) {
                    (Op::Eq(v), Some(x)) => &x == v,
                    (Op::Ne(v), Some(x)) => &x != v,
                    (Op::Ne(_), None) => true,
                    (Op::Present, Some(_)) => true,
                    _ => false,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, parent: &str, labels: &[(&str, &str)]) -> Record {
        Record {
            id: 1,
            name: name.into(),
            parent: parent.into(),
            kind: Kind::Committed,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created: 0,
            updated: 0,
            model: vec![],
        }
    }

    #[test]
    fn containerd_remote_snapshot_filter() {
        let r = rec(
            "sha256:abc",
            "p1",
            &[("containerd.io/snapshot.ref", "sha256:abc")],
        );
        let f = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent==p1"#.into(),
        ])
        .unwrap();
        assert!(f.matches(&r));
        let f = Filters::parse(&[
            r#"labels."containerd.io/snapshot.ref"==sha256:abc,parent==p2"#.into(),
        ])
        .unwrap();
        assert!(!f.matches(&r));
        assert!(
            Filters::parse(&["kind==committed".into()])
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filters::parse(&["name==x".into(), "name==sha256:abc".into()])
                .unwrap()
                .matches(&r),
            "filters are or'ed"
        );
        assert!(
            Filters::parse(&[r#"labels."containerd.io/snapshot.ref""#.into()])
                .unwrap()
                .matches(&r)
        );
        assert!(
            !Filters::parse(&["labels.missing".into()])
                .unwrap()
                .matches(&r)
        );
        assert!(Filters::parse(&["name~=x".into()]).is_err());
    }

    #[test]
    fn non_ascii_filters_do_not_panic() {
        let r = rec("模型", "p", &[("ключ", "значение")]);
        assert!(Filters::parse(&["name==模型".into()]).unwrap().matches(&r));
        assert!(!Filters::parse(&["name!=模型".into()]).unwrap().matches(&r));
        assert!(
            Filters::parse(&["labels.ключ==значение".into()])
                .unwrap()
                .matches(&r)
        );
        assert!(
            Filters::parse(&[r#"labels."ключ"==значение,parent==p"#.into()])
                .unwrap()
                .matches(&r)
        );
        // Multi-byte characters right before and inside the operator position.
        for f in [
            "é",
            "é==",
            "==é",
            "\u{1F980}!=\u{1F980}",
            "\"é\"",
            "é\"==\"x",
        ] {
            let _ = Filters::parse(&[f.into()]);
        }
        assert!(!Filters::parse(&["kind==🦀".into()]).unwrap().matches(&r));
    }
}
