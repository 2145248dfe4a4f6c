//! TOTP (RFC 6238) as authenticator apps speak it: 160-bit secrets, 6
//! digits, 30-second steps, HMAC-SHA1, one step of skew either way; the
//! otpauth URI and its QR code; one-time recovery codes.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, Builder, Secret, Totp};

use crate::domain::{
    Error,
    mfa::{RECOVERY_CODE_CHARS, RecoveryCode, TotpCode},
};

/// Who the apps show as the issuer of the codes, and how long a Login's
/// second-factor challenge lasts.
#[derive(Debug, Clone)]
pub(crate) struct TotpSettings {
    pub(crate) issuer: String,
    pub(crate) challenge_ttl: Duration,
}

const SECRET_BYTES: usize = 20;
const DIGITS: u8 = 6;
const STEP_SECONDS: u64 = 30;
const SKEW_STEPS: u16 = 1;
/// How many recovery codes a user holds at once.
pub(crate) const RECOVERY_CODES: usize = 10;
/// A QR module drawn as this many pixels square, with the quiet zone of
/// four modules the standard asks for: big enough for any phone camera.
const QR_MODULE_PIXELS: usize = 8;
const QR_QUIET_MODULES: usize = 4;

/// A new secret to show the user, not active until confirmed.
pub(crate) struct Enrollment {
    pub(crate) secret: SecretString,
    pub(crate) otpauth_uri: SecretString,
    pub(crate) qr_png: Vec<u8>,
}

impl TotpSettings {
    /// A fresh random secret for the account labelled `account` (the email).
    pub(crate) fn enroll(&self, account: &str) -> Result<Enrollment, Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::internal(e.to_string()))?;
        let uri = builder(Secret::from(bytes.to_vec()))
            .with_issuer(Some(self.issuer.as_str()))
            .with_account_name(account)
            .build()
            .and_then(|totp| totp.to_url())
            .map_err(|_| Error::internal("cannot write the otpauth URI"))?;
        let qr_png = qr_png(&uri)?;
        Ok(Enrollment {
            secret: SecretString::from(Secret::from(bytes.to_vec()).to_base32()),
            otpauth_uri: SecretString::from(uri),
            qr_png,
        })
    }
}

/// The time step `code` is valid for under the base32 `secret` at `now`
/// (Unix seconds), if any: the current step or one either side.
pub(crate) fn matching_step(secret: &SecretString, code: &TotpCode, now: u64) -> Option<i64> {
    let secret = Secret::try_from_base32(secret.expose_secret()).ok()?;
    let step = totp(secret).ok()?.check(code.expose(), now)?;
    i64::try_from(step).ok()
}

fn totp(secret: Secret) -> Result<Totp, Error> {
    builder(secret)
        .build()
        .map_err(|_| Error::internal("a TOTP secret of the wrong size"))
}

fn builder(secret: Secret) -> Builder {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_step_duration(STEP_SECONDS)
        .with_skew(SKEW_STEPS)
        .with_secret(secret)
}

/// Ten new recovery codes as shown to the user (`ABCD-EFGH-IJKL-MNOP`) and
/// the hashes to store.
pub(crate) fn recovery_codes() -> Result<(Vec<SecretString>, Vec<String>), Error> {
    let mut shown = Vec::with_capacity(RECOVERY_CODES);
    let mut hashes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        // 10 random bytes are exactly 16 base32 characters: 80 bits.
        let mut bytes = [0u8; RECOVERY_CODE_CHARS * 5 / 8];
        getrandom::fill(&mut bytes).map_err(|e| Error::internal(e.to_string()))?;
        let code = Secret::from(bytes.to_vec()).to_base32();
        let parsed = RecoveryCode::parse(&code)
            .ok_or_else(|| Error::internal("a generated recovery code does not parse"))?;
        hashes.push(recovery_code_hash(&parsed));
        let groups: Vec<&str> = code
            .as_bytes()
            .chunks(4)
            .filter_map(|group| std::str::from_utf8(group).ok())
            .collect();
        shown.push(SecretString::from(groups.join("-")));
    }
    Ok((shown, hashes))
}

/// What the database stores and looks a recovery code up by: 80 random
/// bits need no slow hash.
pub(crate) fn recovery_code_hash(code: &RecoveryCode) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(code.expose().as_bytes()))
}

/// `text` as a black-on-white PNG QR code, grey-scale.
fn qr_png(text: &str) -> Result<Vec<u8>, Error> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|_| Error::internal("the otpauth URI does not fit a QR code"))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QR_QUIET_MODULES) * QR_MODULE_PIXELS;
    let mut pixels = vec![u8::MAX; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (x, y) = (index % modules, index / modules);
        for dy in 0..QR_MODULE_PIXELS {
            let row = (y + QR_QUIET_MODULES) * QR_MODULE_PIXELS + dy;
            let start = row * side + (x + QR_QUIET_MODULES) * QR_MODULE_PIXELS;
            pixels[start..start + QR_MODULE_PIXELS].fill(0);
        }
    }
    let side = u32::try_from(side).map_err(Error::internal)?;
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&pixels))
        .map_err(Error::internal)?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret and its 8-digit code at 59 s,
    /// whose last six digits are the 6-digit code.
    #[test]
    fn codes_follow_rfc_6238_with_a_step_of_skew() {
        let secret = SecretString::from(Secret::from(b"12345678901234567890".to_vec()).to_base32());
        let code = TotpCode::parse("287082").expect("code");
        assert_eq!(matching_step(&secret, &code, 59), Some(1));
        assert_eq!(matching_step(&secret, &code, 59 + 30), Some(1));
        assert_eq!(matching_step(&secret, &code, 59 + 60), None);
    }

    #[test]
    fn recovery_codes_are_distinct_and_hash_as_typed() {
        let (shown, hashes) = recovery_codes().expect("codes");
        assert_eq!(shown.len(), RECOVERY_CODES);
        let distinct: std::collections::HashSet<_> = hashes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
        let typed = shown[0].expose_secret().to_lowercase().replace('-', " ");
        let parsed = RecoveryCode::parse(&typed).expect("parses");
        assert_eq!(recovery_code_hash(&parsed), hashes[0]);
    }
}
