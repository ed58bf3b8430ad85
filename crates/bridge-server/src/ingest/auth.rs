//! Bearer-token check for Braze's requests, in constant time.
//!
//! Several tokens may be valid at once, so that rotating Braze's token loses
//! nothing (Braze does not resend after a 401). Tokens are kept only as
//! SHA-256 digests, and a presented token is compared with every digest
//! without an early exit, so timing reveals neither which token matched nor
//! how much of one did.

use sha2::{Digest, Sha256};

/// The tokens Braze may present.
#[derive(Clone)]
pub struct BearerTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} configured)", self.digests.len())
    }
}

/// What the `Authorization` header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthCheck {
    /// A valid token.
    Valid,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not configured.
    Wrong,
}

impl BearerTokens {
    /// Accepts any of these tokens.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> BearerTokens {
        BearerTokens {
            digests: tokens.into_iter().map(digest).collect(),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&[u8]>) -> AuthCheck {
        if self.digests.is_empty() {
            return AuthCheck::Valid;
        }
        let Some(token) = authorization.and_then(bearer_token) else {
            return AuthCheck::Missing;
        };
        let presented = digest(token);
        let mut matched = 0u8;
        for known in &self.digests {
            matched |= constant_time_eq(known, &presented);
        }
        if matched == 1 {
            AuthCheck::Valid
        } else {
            AuthCheck::Wrong
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `Bearer <token>`, scheme case-insensitive (RFC 6750), token non-empty.
fn bearer_token(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// 1 when equal, 0 otherwise, looking at every byte.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> u8 {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    u8::from(difference == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_token_is_valid() {
        let tokens = BearerTokens::new(["old-token==", "new-token=="]);
        assert_eq!(tokens.check(Some(b"Bearer old-token==")), AuthCheck::Valid);
        assert_eq!(
            tokens.check(Some(b"bearer   new-token==  ")),
            AuthCheck::Valid
        );
        assert_eq!(tokens.check(Some(b"Bearer other")), AuthCheck::Wrong);
        assert_eq!(tokens.check(Some(b"Bearer old-token")), AuthCheck::Wrong);
        assert_eq!(
            tokens.check(Some(b"Basic b2xkLXRva2VuPT0=")),
            AuthCheck::Missing
        );
        assert_eq!(tokens.check(Some(b"Bearer ")), AuthCheck::Missing);
        assert_eq!(tokens.check(None), AuthCheck::Missing);
    }

    #[test]
    fn no_tokens_means_no_check_and_debug_hides_tokens() {
        assert_eq!(BearerTokens::new([]).check(None), AuthCheck::Valid);
        let printed = format!("{:?}", BearerTokens::new(["s3cret-token", "other"]));
        assert_eq!(printed, "BearerTokens(2 configured)");
    }
}
