//! SCRAM-SHA-256 password verifiers, as PostgreSQL stores them in `pg_authid.rolpassword`:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802, RFC 7677).
//!
//! Tusk sends PostgreSQL a verifier, never a plaintext password, and checks a role's stored
//! verifier against the password it should have by recomputing the `ServerKey` with the stored
//! salt and iteration count.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A new verifier for `password`, with a random salt and PostgreSQL's default 4096 iterations.
pub fn make(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u) {
            *o ^= x;
        }
    }
    out
}

/// True when `verifier` is a SCRAM-SHA-256 verifier of `password`. Anything else (an MD5 hash,
/// a plaintext, no password, a malformed verifier) is false.
pub fn matches(verifier: &str, password: &str) -> bool {
    let Some(rest) = verifier.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((params, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((_, server_key))) = (params.split_once(':'), keys.split_once(':'))
    else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(server_key)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(server_key),
    ) else {
        return false;
    };
    if iterations == 0 || iterations > 10_000_000 {
        return false;
    }
    // SASLprep as PostgreSQL applies it; a password it cannot prepare is used as it is.
    let prepared = stringprep::saslprep(password).map_or_else(|_| password.to_owned(), |p| p.into_owned());
    let salted = hi(prepared.as_bytes(), &salt, iterations);
    hmac(&salted, b"Server Key").as_slice() == server_key.as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verifier_matches_its_password_only() {
        let v = make("correct horse");
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(matches(&v, "correct horse"));
        assert!(!matches(&v, "correct horse "));
        assert!(!matches("md5abcdef", "correct horse"));
        assert!(!matches("SCRAM-SHA-256$x", "correct horse"));
        assert!(!matches("", ""));
    }

    #[test]
    fn verifiers_postgresql_made_are_recognised() {
        // `ALTER ROLE postgres PASSWORD '...'` then `SELECT rolpassword FROM pg_authid` on
        // PostgreSQL 15.18 (Debian).
        let secret = "SCRAM-SHA-256$4096:lUeRdgZjCPcfvREaTRu2MQ==$9X6EukM6L2UVgsf3HvPAAEbUTYRFMtvnIYCfvs+BsFA=:I6hGLpk0vClJrkCBByDQYcpxZfBeuF72YhkI/JqDJSM=";
        assert!(matches(secret, "secret"));
        assert!(!matches(secret, "Secret"));
        let umlauts = "SCRAM-SHA-256$4096:P4Cy0v7BllIf1yktKvp2vw==$jF6QiUesUeifwGCKsEEYRbctuqc2hGIDvbv8lKEPkBc=:A2gMt9ayeFf7Wq3VOVHg/H0+IfHqq/MUWhXYU/8XAac=";
        assert!(matches(umlauts, "p\u{e4}ssw\u{f6}rd"));
        assert!(!matches(umlauts, "passwort"));
    }
}
