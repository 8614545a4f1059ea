//! The ID token's signature, checked against the provider's published keys
//! (JWKS) with `jsonwebtoken`. Only asymmetric algorithms are accepted:
//! `none` is not an algorithm `jsonwebtoken` parses, and HMAC (`HS*`) would
//! let anyone who knows a public key sign with it. The claims are checked
//! afterwards by `domain::oidc::check_claims`.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// The longest ID token accepted.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// No published key fits the token's `kid` and algorithm: the keys may
    /// have rotated, so they are fetched again once.
    UnknownKey,
    /// The token is malformed, uses a refused algorithm, or its signature
    /// does not verify.
    Invalid(String),
}

/// The JWK `kty` an algorithm's keys have; `None` for refused algorithms.
fn key_type(alg: Algorithm) -> Option<&'static str> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some("RSA"),
        ES256 | ES384 => Some("EC"),
        EdDSA => Some("OKP"),
        HS256 | HS384 | HS512 => None,
    }
}

fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether a published key may verify a token signed with `alg` and `kid`.
fn fits(key: &Value, kty: &str, alg: &str, kid: Option<&str>) -> bool {
    let s = |k: &str| key.get(k).and_then(Value::as_str);
    s("kty") == Some(kty)
        && s("use").is_none_or(|u| u == "sig")
        && s("alg").is_none_or(|a| a == alg)
        && kid.is_none_or(|kid| s("kid") == Some(kid))
}

/// Verifies the signature of `token` with one of `keys` (the `keys` of a
/// JWKS document) and returns its claims, unchecked.
pub fn verify(token: &str, keys: &[Value]) -> Result<Value, VerifyError> {
    let invalid = |m: &str| VerifyError::Invalid(m.to_string());
    if token.len() > MAX_TOKEN_LEN {
        return Err(invalid("the ID token is too long"));
    }
    let header = decode_header(token)
        .map_err(|e| VerifyError::Invalid(format!("unreadable header: {e}")))?;
    let kty = key_type(header.alg).ok_or_else(|| {
        VerifyError::Invalid(format!("algorithm {} is refused", alg_name(header.alg)))
    })?;
    let alg = alg_name(header.alg);
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| fits(k, kty, &alg, header.kid.as_deref()))
        .collect();
    if candidates.is_empty() {
        return Err(VerifyError::UnknownKey);
    }
    let mut validation = Validation::new(header.alg);
    // The registered claims are checked by domain::oidc::check_claims, with
    // strict types; here only the signature.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    for key in candidates {
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(key.clone()) else {
            continue;
        };
        let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if let Ok(data) = decode::<Value>(token, &decoding, &validation) {
            return Ok(data.claims);
        }
    }
    Err(invalid("the signature does not verify"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    pub const TEST_KEY_DER: &[u8] = include_bytes!("test_key.der");
    pub const TEST_KEY_N: &str = include_str!("test_key.n");

    pub fn jwk(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": TEST_KEY_N.trim(), "e": "AQAB"})
    }

    pub fn sign(kid: Option<&str>, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(str::to_string);
        encode(&h, claims, &EncodingKey::from_rsa_der(TEST_KEY_DER)).unwrap()
    }

    fn b64(v: &Value) -> String {
        app::ssr::oidc::base64url(v.to_string().as_bytes())
    }

    fn claims() -> Value {
        json!({"iss": "https://id.example.com", "sub": "s1", "aud": "tollgate", "exp": 2_000_000_000u64, "iat": 1_000_000_000u64, "nonce": "n"})
    }

    #[test]
    fn a_token_signed_by_a_published_key_verifies() {
        let t = sign(Some("k1"), &claims());
        assert_eq!(verify(&t, &[jwk("k1")]), Ok(claims()));
        // Without a kid, any key of the right type is tried.
        let t = sign(None, &claims());
        assert_eq!(verify(&t, &[jwk("k0"), jwk("k1")]), Ok(claims()));
    }

    #[test]
    fn unknown_kids_wrong_keys_and_tampering_are_refused() {
        let t = sign(Some("k2"), &claims());
        assert_eq!(verify(&t, &[jwk("k1")]), Err(VerifyError::UnknownKey));
        assert_eq!(verify(&t, &[]), Err(VerifyError::UnknownKey));
        // A key published for encryption, or for another algorithm, is not used.
        let mut enc = jwk("k2");
        enc["use"] = json!("enc");
        assert_eq!(verify(&t, &[enc]), Err(VerifyError::UnknownKey));
        let mut ps = jwk("k2");
        ps["alg"] = json!("PS256");
        assert_eq!(verify(&t, &[ps]), Err(VerifyError::UnknownKey));
        // Another modulus under the same kid: the signature fails.
        let mut other = jwk("k2");
        other["n"] = json!(format!(
            "{}A",
            &TEST_KEY_N.trim()[..TEST_KEY_N.trim().len() - 1]
        ));
        assert!(matches!(verify(&t, &[other]), Err(VerifyError::Invalid(_))));
        // Changed claims under the original signature.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims();
        c["sub"] = json!("admin");
        parts[1] = b64(&c);
        assert!(matches!(
            verify(&parts.join("."), &[jwk("k2")]),
            Err(VerifyError::Invalid(_))
        ));
        for junk in ["", "a.b", "a.b.c", "....", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(
                matches!(verify(junk, &[jwk("k1")]), Err(VerifyError::Invalid(_))),
                "{junk:.20}"
            );
        }
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        let payload = b64(&claims());
        let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "kid": "k1"})));
        assert!(matches!(
            verify(&none, &[jwk("k1")]),
            Err(VerifyError::Invalid(_))
        ));
        // HS256 keyed with the public modulus, as in the classic confusion attack.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let forged = encode(
            &h,
            &claims(),
            &EncodingKey::from_secret(TEST_KEY_N.trim().as_bytes()),
        )
        .unwrap();
        let e = verify(&forged, &[jwk("k1")]).unwrap_err();
        assert_eq!(e, VerifyError::Invalid("algorithm HS256 is refused".into()));
        // Even when the provider publishes a symmetric key.
        let oct = json!({"kty": "oct", "kid": "k1", "k": "c2VjcmV0"});
        assert!(matches!(
            verify(&forged, &[oct]),
            Err(VerifyError::Invalid(_))
        ));
    }
}
