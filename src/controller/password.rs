//! Random passwords from the operating system's generator.

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
    }
}
