//! WeChat message push signatures and safe mode (wechat-api.md §5):
//! SHA-1 over the sorted parts, AES-256-CBC with the EncodingAESKey.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use sha1::{Digest, Sha1};

type Decryptor = cbc::Decryptor<aes::Aes256>;
type Encryptor = cbc::Encryptor<aes::Aes256>;

/// WeChat pads to multiples of 32 bytes (PKCS#7 with a 32-byte block).
const PAD_BLOCK: usize = 32;

/// `sha1(sorted(parts).join(""))` in lowercase hex.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = Sha1::digest(sorted.concat().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two signatures.
pub fn same_signature(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.to_ascii_lowercase().into_bytes());
    a.len() == b.len() && a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 32-byte AES key of an EncodingAESKey (43 characters of base64).
pub struct AesKey([u8; 32]);

impl AesKey {
    pub fn parse(encoding_aes_key: &str) -> Result<AesKey, String> {
        let text = encoding_aes_key.trim();
        if text.len() != 43 {
            return Err(format!(
                "an EncodingAESKey has 43 characters, this one {}",
                text.len()
            ));
        }
        // WeChat's keys end in bits that strict base64 refuses.
        let lenient = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let bytes = lenient
            .decode(format!("{text}="))
            .map_err(|_| "the EncodingAESKey is not base64".to_string())?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the EncodingAESKey does not decode to 32 bytes".to_string())?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }

    /// The message inside `Encrypt`, checked to be for `appid`.
    pub fn decrypt(&self, encrypted: &str, appid: &str) -> Result<String, String> {
        let mut data = STANDARD
            .decode(encrypted.trim())
            .map_err(|_| "Encrypt is not base64".to_string())?;
        if data.is_empty() || !data.len().is_multiple_of(16) {
            return Err("Encrypt is not a whole number of AES blocks".into());
        }
        let plain = Decryptor::new(&self.0.into(), &self.iv().into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| "Encrypt does not decrypt".to_string())?;
        let pad = usize::from(*plain.last().unwrap_or(&0));
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err("Encrypt has a bad padding: wrong EncodingAESKey?".into());
        }
        let plain = &plain[..plain.len() - pad];
        if plain.len() < 20 {
            return Err("Encrypt is too short".into());
        }
        let len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let rest = &plain[20..];
        if len > rest.len() {
            return Err("Encrypt holds a wrong length: wrong EncodingAESKey?".into());
        }
        let (message, sender) = rest.split_at(len);
        if sender != appid.as_bytes() {
            return Err(format!(
                "the message is for appid {}, not this job's",
                String::from_utf8_lossy(sender)
            ));
        }
        String::from_utf8(message.to_vec()).map_err(|_| "the message is not UTF-8".into())
    }

    /// `Encrypt` for `message` (the simulator's pushes and the tests).
    pub fn encrypt(&self, message: &str, appid: &str, random: [u8; 16]) -> String {
        let mut plain = random.to_vec();
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message.as_bytes());
        plain.extend_from_slice(appid.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let encrypted = Encryptor::new(&self.0.into(), &self.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .expect("the buffer is padded to whole blocks");
        STANDARD.encode(encrypted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// wechat-api.md §5.
    const VECTOR: &str = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";

    #[test]
    fn the_verification_signature_matches_the_documented_vector() {
        assert_eq!(
            signature(&["AAAAA", "1714036504", "1514711492"]),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
    }

    #[test]
    fn the_safe_mode_vector_verifies_and_decrypts() {
        assert_eq!(
            signature(&["123456", "1411525903", "461056294", VECTOR]),
            "74d92dfeb87ba7c714f89d98870ae5eb62dff26d"
        );
        let key = AesKey::parse("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap();
        let message = key.decrypt(VECTOR, "wx49f0ab532d5d035a").unwrap();
        assert!(
            message.contains("<ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>"),
            "{message}"
        );
        assert!(
            message.contains("<Content><![CDATA[test]]></Content>"),
            "{message}"
        );
        assert!(
            key.decrypt(VECTOR, "wxother")
                .unwrap_err()
                .contains("wx49f0ab532d5d035a")
        );
    }

    #[test]
    fn encrypt_and_decrypt_round_trip_and_a_wrong_key_is_refused() {
        let key = AesKey::parse("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap();
        let sealed = key.encrypt("{\"querykey\":\"o1\"}", "wxapp", [7; 16]);
        assert_eq!(
            key.decrypt(&sealed, "wxapp").unwrap(),
            "{\"querykey\":\"o1\"}"
        );
        let other = AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        assert!(other.decrypt(&sealed, "wxapp").is_err());
        assert!(AesKey::parse("short").is_err());
    }
}
