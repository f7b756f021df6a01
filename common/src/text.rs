//! Making artifact-supplied text safe to print on a terminal.
//!
//! Filepaths, annotations and config fields come from whoever built the
//! artifact. Printed raw, an ESC byte starts a terminal control sequence: it
//! can recolour or clear the screen, rewrite earlier lines (hiding a
//! `validate` error), retitle the window or, on some terminals, write files.
//! Carriage returns and bidi overrides make one name look like another. So
//! human output passes such strings through [`escape_control`]; JSON output
//! does not need it because serde already escapes C0 controls there.

use std::borrow::Cow;
use std::fmt::Write as _;

/// True for characters that must not reach a terminal unescaped: C0 controls,
/// DEL, C1 controls (U+0080–U+009F, which 8-bit terminals read as CSI & co.)
/// and the Unicode bidi embedding/override/isolate controls that reorder how
/// the rest of a line is displayed ("Trojan Source").
pub fn is_unsafe_char(c: char) -> bool {
    matches!(c, '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Escapes the characters of [`is_unsafe_char`]: `\t`, `\n`, `\r` by name,
/// other ASCII controls as `\x1b`, the rest as `\u{9b}`. Everything else —
/// including ordinary non-ASCII text such as `模型.safetensors` — is left as
/// is, and a string with nothing to escape is returned borrowed (no copy).
///
/// Backslashes are not doubled: the output is for people, not for parsing,
/// and doubling would garble every Windows-style path in a listing.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(is_unsafe_char) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe_char(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_terminal_sequences() {
        assert_eq!(
            escape_control("a\x1b[2Jb\x07\u{9b}31m\u{202e}c"),
            "a\\x1b[2Jb\\x07\\u{9b}31m\\u{202e}c"
        );
        assert_eq!(escape_control("x\ty\r\nz\x7f"), "x\\ty\\r\\nz\\x7f");
        assert_eq!(escape_control("\0"), "\\x00");
    }

    #[test]
    fn leaves_ordinary_text_borrowed() {
        for s in [
            "weights/模型-00001.safetensors",
            "café ünïcode ✓ 🦀",
            "a\\b",
            "",
        ] {
            assert!(
                matches!(escape_control(s), Cow::Borrowed(b) if b == s),
                "{s}"
            );
        }
    }

    proptest! {
        #[test]
        fn output_never_contains_unsafe_chars(s in any::<String>()) {
            let e = escape_control(&s);
            prop_assert!(!e.chars().any(is_unsafe_char), "{e:?}");
            // A copy is made exactly when something had to be escaped, and
            // nothing is ever dropped.
            let safe: String = s.chars().filter(|c| !is_unsafe_char(*c)).collect();
            let unchanged = matches!(e, Cow::Borrowed(_));
            prop_assert_eq!(unchanged, safe == s);
            prop_assert!(e.len() >= s.len());
        }
    }
}
