//! The API token: compared in constant time, never shown.

use std::sync::Arc;

use subtle::ConstantTimeEq;

/// A secret that API calls must carry. Its `Debug` shows no byte of it,
/// so it never reaches a log by accident.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// A token; an empty one matches nothing.
    pub fn new(secret: &str) -> Self {
        Self(secret.as_bytes().into())
    }

    /// Whether `given` is the token, compared in constant time (only the
    /// length can be learnt from the time taken).
    pub fn matches(&self, given: &[u8]) -> bool {
        !self.0.is_empty() && bool::from(given.ct_eq(&self.0))
    }

    /// Whether an `Authorization` header value carries the token in the
    /// `Bearer` scheme, whose name is matched in any case (RFC 7235).
    pub fn matches_bearer(&self, header: &[u8]) -> bool {
        let Some(space) = header.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, rest) = header.split_at(space);
        let credentials = rest.trim_ascii_start();
        scheme.eq_ignore_ascii_case(b"bearer") && self.matches(credentials)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_the_token_exactly() {
        let token = Token::new("s3cret");
        for good in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer  s3cret",
        ] {
            assert!(token.matches_bearer(good.as_bytes()), "{good}");
        }
        for bad in [
            "Bearer S3cret",
            "Bearer s3cre",
            "Basic s3cret",
            "s3cret",
            "Bearer",
            "Bearer ",
            "Bearers3cret",
        ] {
            assert!(!token.matches_bearer(bad.as_bytes()), "{bad}");
        }
        assert!(
            !Token::new("").matches(b""),
            "an empty token matches nothing"
        );
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
