//! Property tests that throw arbitrary input at every parser a client can
//! reach: request decoding and validation, bearer metadata, access tokens
//! and refresh tokens. Nothing may panic, and what is accepted must be sound.

use std::time::Duration;

use authd_verify::bearer_token;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use proptest::prelude::*;
use prost::Message;

use crate::{
    api::{convert, proto},
    core::refresh_token::RefreshToken,
    core::tokens::{KeyPair, Keyring, Tokens},
    domain::{EMAIL_MAX_BYTES, Email, Password, Username},
};

fn tokens() -> Tokens {
    let keyring = Keyring::new(KeyPair::generate().expect("key"), &[]).expect("keyring");
    Tokens::new(
        keyring,
        "authd".into(),
        "authd".into(),
        Duration::from_secs(60),
    )
}

/// Three dot-separated base64url segments around arbitrary JSON-ish text:
/// the shape that gets furthest into the JWT parser.
fn jwt_shaped() -> impl Strategy<Value = String> {
    (any::<String>(), any::<String>(), any::<Vec<u8>>()).prop_map(|(header, claims, sig)| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(sig)
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_request_bytes_decode_and_validate_without_panic(bytes in any::<Vec<u8>>()) {
        if let Ok(request) = proto::SignupRequest::decode(bytes.as_slice()) {
            let _ = convert::new_user(request, 8);
        }
        if let Ok(request) = proto::LoginRequest::decode(bytes.as_slice()) {
            let _ = convert::credentials(request);
        }
        if let Ok(request) = proto::ChangePasswordRequest::decode(bytes.as_slice()) {
            let _ = convert::password_change(request, 8);
        }
    }

    #[test]
    fn accepted_emails_are_canonical(raw in any::<String>()) {
        if let Ok(email) = Email::parse(&raw) {
            prop_assert!(email.as_str().len() <= EMAIL_MAX_BYTES);
            prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            let key = Email::parse(email.key()).map(|again| again.key().to_owned());
            prop_assert_eq!(key.as_deref(), Ok(email.key()));
        }
    }

    #[test]
    fn accepted_emails_from_plausible_addresses(
        local in "[a-zA-Z0-9._%+\u{00e9}-]{1,70}",
        domain in "[a-zA-Z0-9.\u{00fc}-]{1,40}",
    ) {
        let _ = Email::parse(&format!("{local}@{domain}"));
    }

    #[test]
    fn usernames_and_passwords_never_panic(raw in any::<String>(), min in 0usize..100) {
        if let Ok(username) = Username::parse(&raw) {
            prop_assert!((1..=64).contains(&username.as_str().chars().count()));
        }
        if let Ok(password) = Password::parse_new(raw.clone(), min) {
            prop_assert!(password.expose().len() <= 72 && !password.expose().contains('\0'));
        }
    }

    #[test]
    fn arbitrary_authorization_metadata_never_panics(bytes in any::<Vec<u8>>()) {
        if let Ok(value) = HeaderValue::from_bytes(&bytes) {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            if let Some(token) = bearer_token(&headers) {
                prop_assert!(!token.is_empty() && !token.contains(' '));
            }
        }
    }

    #[test]
    fn no_arbitrary_token_verifies(text in any::<String>(), shaped in jwt_shaped()) {
        let tokens = tokens();
        prop_assert!(tokens.verify(&text).is_err());
        prop_assert!(tokens.verify(&shaped).is_err());
    }

    #[test]
    fn arbitrary_refresh_tokens_parse_or_not_without_panic(text in any::<String>()) {
        if let Some(token) = RefreshToken::parse(&text) {
            prop_assert_eq!(token.encode(), text);
        }
    }
}
