//! Quoting for the SQL the agent builds: names and values come from users' resources and may
//! hold quotes, spaces, unicode or keywords.

/// Quotes an identifier: always quoted, so case, spaces and keywords survive as written.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal. Backslashes stay as they are: the server runs with
/// `standard_conforming_strings` on.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_the_quote() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn identifiers_keep_quotes_spaces_unicode_case_and_keywords() {
        for (name, quoted) in [
            (r#"a"b c"#, r#""a""b c""#),
            (r#""""#, r#""""""""#),
            ("my db", r#""my db""#),
            ("Ünïcødé", r#""Ünïcødé""#),
            ("MixedCase", r#""MixedCase""#),
            ("select", r#""select""#),
            ("user", r#""user""#),
            ("a'b", r#""a'b""#),
        ] {
            assert_eq!(ident(name), quoted, "{name}");
        }
    }

    #[test]
    fn literals_keep_quotes_backslashes_and_unicode() {
        for (value, quoted) in [
            ("", "''"),
            ("'; DROP ROLE x; --", "'''; DROP ROLE x; --'"),
            (r"C:\dir", r"'C:\dir'"),
            (r#"say "hi""#, r#"'say "hi"'"#),
            ("Ünïcødé", "'Ünïcødé'"),
            ("select", "'select'"),
        ] {
            assert_eq!(literal(value), quoted, "{value}");
        }
    }
}
