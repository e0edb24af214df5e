//! RFC 8291 message encryption (`Content-Encoding: aes128gcm`, RFC 8188 with one record): a
//! fresh ephemeral P-256 key and a fresh 16-byte salt per message, the shared secret with the
//! subscription's `p256dh` key, HKDF-SHA256 keyed by its `auth` secret, and AES-128-GCM over the
//! plaintext and the last-record delimiter. All by `aws-lc-rs`: its P-256 (s2n-bignum's) takes
//! 65 µs for the key and the agreement here against ring's 75 (medians of 15 interleaved rounds
//! on the development VM, `docs/performance.md`), and the agreements are most of a browser
//! message's cost.
//!
//! ```text
//! ecdh  = ECDH(as_private, ua_public)
//! IKM   = HKDF(salt = auth, ikm = ecdh, info = "WebPush: info\0" || ua_public || as_public, 32)
//! CEK   = HKDF(salt, IKM, "Content-Encoding: aes128gcm\0", 16)
//! NONCE = HKDF(salt, IKM, "Content-Encoding: nonce\0", 12)
//! body  = salt || rs (u32 BE) || idlen (65) || as_public || AES-GCM(CEK, NONCE, plaintext || 0x02)
//! ```

use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{ECDH_P256, PrivateKey, UnparsedPublicKey, agree};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};

use super::payload::MAX_PLAINTEXT_BYTES;
use super::subscription::{P256DH_BYTES, Subscription};

/// The record size written in the header: one record of at most this, so 3993 bytes of
/// plaintext fit (see [`MAX_PLAINTEXT_BYTES`]).
pub const RECORD_SIZE: u32 = 4096;
/// Salt, record size, key id length, key id.
pub const HEADER_BYTES: usize = 16 + 4 + 1 + P256DH_BYTES;
/// AES-GCM's tag.
const TAG_BYTES: usize = 16;
/// RFC 8188's delimiter of the last record.
const LAST_RECORD: u8 = 0x02;

/// Why a message could not be encrypted.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptError {
    /// More plaintext than one record carries.
    TooLarge { size: usize },
    /// The subscription's key is not a point ECDH accepts (checked when registered, so only a
    /// corrupt record gets here).
    BadKey,
    /// The system's randomness failed.
    Random,
}

impl std::fmt::Display for EncryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncryptError::TooLarge { size } => write!(
                f,
                "plaintext of {size} bytes is over the {MAX_PLAINTEXT_BYTES} one record carries"
            ),
            EncryptError::BadKey => f.write_str("the subscription's p256dh key is unusable"),
            EncryptError::Random => f.write_str("no randomness for the message key"),
        }
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand<const N: usize>(prk: &aws_lc_rs::hkdf::Prk, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    // Lengths of 12, 16 and 32 are far below HKDF-SHA256's 255 * 32: neither call can fail.
    if let Ok(okm) = prk.expand(info, Len(N)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// Encrypts `plaintext` for `sub` with a fresh key and salt.
pub fn encrypt(sub: &Subscription, plaintext: &[u8]) -> Result<Vec<u8>, EncryptError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|_| EncryptError::Random)?;
    let as_key = PrivateKey::generate(&ECDH_P256).map_err(|_| EncryptError::Random)?;
    encrypt_with(sub, plaintext, salt, &as_key)
}

/// [`encrypt`] with a given salt and application-server key (the RFC's example fixes both;
/// every message sent has its own).
pub fn encrypt_with(
    sub: &Subscription,
    plaintext: &[u8],
    salt: [u8; 16],
    as_key: &PrivateKey,
) -> Result<Vec<u8>, EncryptError> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(EncryptError::TooLarge {
            size: plaintext.len(),
        });
    }
    let as_public = as_key
        .compute_public_key()
        .map_err(|_| EncryptError::Random)?;
    let ua_public = UnparsedPublicKey::new(&ECDH_P256, &sub.p256dh[..]);
    let ikm: [u8; 32] = agree(as_key, ua_public, Unspecified, |ecdh| {
        let prk = Salt::new(HKDF_SHA256, &sub.auth).extract(ecdh);
        Ok(expand(
            &prk,
            &[b"WebPush: info\0", &sub.p256dh, as_public.as_ref()],
        ))
    })
    .map_err(|_| EncryptError::BadKey)?;
    let prk = Salt::new(HKDF_SHA256, &salt).extract(&ikm);
    let cek: [u8; 16] = expand(&prk, &[b"Content-Encoding: aes128gcm\0"]);
    let nonce: [u8; 12] = expand(&prk, &[b"Content-Encoding: nonce\0"]);

    let mut body = Vec::with_capacity(HEADER_BYTES + plaintext.len() + 1 + TAG_BYTES);
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(P256DH_BYTES as u8);
    body.extend_from_slice(as_public.as_ref());
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_BYTES);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    let key = UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| EncryptError::BadKey)?;
    LessSafeKey::new(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut record,
        )
        .map_err(|_| EncryptError::BadKey)?;
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, deprecated)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn b64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).unwrap()
    }

    fn rfc_subscription() -> Subscription {
        Subscription {
            endpoint: "https://push.example.net/push/JzLQ3raZJfFBR0aqvOMsLrt54w4rJUsV".into(),
            p256dh: b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
                .try_into()
                .unwrap(),
            auth: b64("BTBZMqHH6r4Tts7J_aSIgg").try_into().unwrap(),
        }
    }

    /// RFC 8291 Appendix A: the application server's key and the salt fixed, the message
    /// encrypts to exactly the RFC's bytes.
    #[test]
    fn the_rfc_8291_appendix_a_example_encrypts_to_its_bytes() {
        let as_private = b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw");
        let as_key = PrivateKey::from_private_key(&ECDH_P256, &as_private).unwrap();
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = encrypt_with(
            &rfc_subscription(),
            b"When I grow up, I want to be a watermelon",
            salt,
            &as_key,
        )
        .unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn every_message_has_its_own_salt_and_key_and_one_record_at_most() {
        let sub = rfc_subscription();
        let a = encrypt(&sub, b"x").unwrap();
        let b = encrypt(&sub, b"x").unwrap();
        assert_ne!(a[..16], b[..16], "salt");
        assert_ne!(a[21..86], b[21..86], "ephemeral key");
        assert_eq!(a.len(), HEADER_BYTES + 1 + 1 + 16);
        assert_eq!(&a[16..21], &[0, 0, 16, 0, 65]);
        let full = vec![b'a'; MAX_PLAINTEXT_BYTES];
        let body = encrypt(&sub, &full).unwrap();
        assert_eq!(
            body.len() - HEADER_BYTES,
            RECORD_SIZE as usize - HEADER_BYTES
        );
        assert!(matches!(
            encrypt(&sub, &[0; MAX_PLAINTEXT_BYTES + 1]),
            Err(EncryptError::TooLarge { .. })
        ));
    }
}
