//! `postgresql.conf` syntax, which the operator writes into the ConfigMap and the instance
//! manager into the data directory.

/// Quotes a parameter value for `postgresql.conf`.
pub fn conf_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(super::conf_value(r"it's \ odd"), r"'it''s \\ odd'");
    }
}
