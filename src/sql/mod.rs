//! Tusk's SQL: how the operator reaches a cluster ([`endpoint`]), quotes what it sends
//! ([`ident`], [`literal`]), checks and makes SCRAM verifiers ([`scram`]), and converges roles
//! ([`role`]) and databases ([`database`]) idempotently. The planners are pure functions from what
//! is wanted and what PostgreSQL reported to the statements that close the gap; nothing is sent
//! when there is no gap.

pub mod connections;
pub mod database;
pub mod endpoint;
pub mod role;
pub mod scram;
pub mod tls;

/// Quotes an identifier (a role, database, schema or extension name) for SQL: always in double
/// quotes, with double quotes doubled, so any name is taken exactly as written.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL the way PostgreSQL's `quote_literal` does: single quotes
/// doubled, and an `E''` string with backslashes doubled when there is a backslash, so the
/// value is the same whatever `standard_conforming_strings` says.
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted_whole() {
        assert_eq!(ident("app"), "\"app\"");
        assert_eq!(ident(r#"x"; DROP TABLE t; --"#), r#""x""; DROP TABLE t; --""#);
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }

    proptest::proptest! {
        /// A quoted identifier is one token: it starts and ends with a quote, and every quote
        /// inside comes in pairs.
        #[test]
        fn a_quoted_identifier_never_ends_early(name in "\\PC{1,40}") {
            let q = ident(&name);
            let inner = &q[1..q.len() - 1];
            proptest::prop_assert!(q.starts_with('"') && q.ends_with('"'));
            proptest::prop_assert_eq!(inner.replace("\"\"", ""), name.replace('"', ""));
        }
    }
}
