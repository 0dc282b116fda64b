//! Version ranges as OLM reads `olm.skipRange`: blang/semver ranges, where spaces join
//! comparators that must all hold and `||` joins alternatives (`>=0.1.0 <1.0.0`).

use semver::Version;

/// A parsed range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    alternatives: Vec<Vec<(Op, Version)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Range {
    /// Parses `text`, or says which part is not a comparator.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut alternatives = Vec::new();
        for alternative in text.split("||") {
            let mut all = Vec::new();
            for part in alternative.split_whitespace() {
                let (op, rest) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    ("!=", Op::Ne),
                    ("==", Op::Eq),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                ]
                .iter()
                .find_map(|(prefix, op)| part.strip_prefix(prefix).map(|rest| (*op, rest)))
                .unwrap_or((Op::Eq, part));
                let version = Version::parse(rest).map_err(|e| {
                    format!("{text:?} is not a version range: {part:?} is not a comparator and a semantic version ({e}); write e.g. \">=0.1.0 <1.0.0\"")
                })?;
                all.push((op, version));
            }
            if all.is_empty() {
                return Err(format!(
                    "{text:?} is not a version range: an alternative is empty"
                ));
            }
            alternatives.push(all);
        }
        Ok(Self { alternatives })
    }

    /// Whether `version` is in the range.
    pub fn contains(&self, version: &Version) -> bool {
        self.alternatives.iter().any(|all| {
            all.iter().all(|(op, bound)| match op {
                Op::Eq => version == bound,
                Op::Ne => version != bound,
                Op::Gt => version > bound,
                Op::Ge => version >= bound,
                Op::Lt => version < bound,
                Op::Le => version <= bound,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn olm_ranges() {
        let range = Range::parse(">=0.1.0 <1.0.0").unwrap();
        assert!(range.contains(&v("0.1.0")));
        assert!(range.contains(&v("0.2.0")));
        assert!(!range.contains(&v("1.0.0")));
        assert!(!range.contains(&v("0.0.9")));
        let either = Range::parse("<0.1.0 || >1.0.0").unwrap();
        assert!(either.contains(&v("0.0.1")) && either.contains(&v("1.0.1")));
        assert!(!either.contains(&v("0.5.0")));
        assert!(Range::parse(">=0.1 <1.0.0").unwrap_err().contains("\">=0.1\""));
        assert!(Range::parse("").is_err());
    }
}
