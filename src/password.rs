//! Passwords: the one rule a superuser password must follow, shared by the operator (which
//! refuses to hand a pod a password it would reject) and the instance manager (which reads it
//! from the mounted Secret), and random passwords from the operating system's generator.

/// Why a password breaks [`check`]'s rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleBroken {
    /// It is empty.
    #[error("must not be empty")]
    Empty,
    /// It holds a line break or NUL, which neither `initdb --pwfile` nor libpq can carry.
    #[error("must be one line: no line feed, carriage return or NUL")]
    NotOneLine,
}

/// The rule a superuser password must follow: one line, not empty. `initdb --pwfile` reads only
/// the first line, and a connection string cannot carry NUL.
pub fn check(password: &str) -> Result<(), RuleBroken> {
    if password.is_empty() {
        return Err(RuleBroken::Empty);
    }
    if password.contains(['\n', '\r', '\0']) {
        return Err(RuleBroken::NotOneLine);
    }
    Ok(())
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Length of generated passwords: 32 characters of 62 is about 190 bits.
pub const LENGTH: usize = 32;

/// A new random password of [`LENGTH`] letters and digits.
pub fn generate() -> String {
    let mut out = String::with_capacity(LENGTH);
    let mut byte = [0u8; 1];
    while out.len() < LENGTH {
        getrandom::fill(&mut byte).expect("the operating system's random generator works");
        // Rejection sampling keeps every character equally likely: 248 = 4 * 62.
        if byte[0] < 248 {
            out.push(ALPHABET[usize::from(byte[0]) % ALPHABET.len()] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let a = super::generate();
        let b = super::generate();
        assert_eq!(a.len(), super::LENGTH);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(super::check(&a), Ok(()));
    }

    #[test]
    fn the_rule_refuses_what_initdb_and_libpq_cannot_take() {
        use super::{RuleBroken, check};
        assert_eq!(check(""), Err(RuleBroken::Empty));
        assert_eq!(check("two\nlines"), Err(RuleBroken::NotOneLine));
        assert_eq!(check("ends\r"), Err(RuleBroken::NotOneLine));
        assert_eq!(check("nul\0"), Err(RuleBroken::NotOneLine));
        assert_eq!(check("p@ss w'rd \\ é"), Ok(()));
    }
}
