//! Per-device authentication: HTTP Basic with `device_id:token`, where the
//! token is `hex(HMAC-SHA256(key, device_id))`.
//!
//! Verification needs no database and happens before the body is read. Several
//! keys may be loaded at once (key rotation): a token from any of them is
//! valid. Comparison is constant-time.

use std::path::Path;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The device keys of an ingest replica.
#[derive(Clone)]
pub struct DeviceKeys {
    keys: Vec<Vec<u8>>,
    /// One HMAC per key with the key already absorbed: each verification
    /// clones one instead of hashing the padded key again (half of the
    /// SHA-256 blocks of a check).
    keyed: Vec<HmacSha256>,
}

impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "DeviceKeys({} keys)", self.keys.len())
    }
}

/// Why a request's credentials were refused (HTTP 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing Authorization header (HTTP Basic: device id and token)")]
    Missing,
    /// Not `Basic base64(user:password)`.
    #[error("malformed Authorization header (expected HTTP Basic)")]
    Malformed,
    /// The token does not match the device id under any loaded key.
    #[error("wrong token for this device")]
    WrongToken,
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read device key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("device key file {0} is empty")]
    Empty(String),
    /// No key was given.
    #[error("no device key given")]
    None,
    /// The file's key is shorter than [`MIN_KEY_BYTES`]: easy to guess from
    /// tokens seen on the wire. Rotate it.
    #[error(
        "device key file {path} holds {len} bytes, fewer than the {min} required; \
         rotate to a longer key (e.g. `openssl rand -hex 32`), loading the new file first \
         and the old one second until every device has its new token"
    )]
    TooShort {
        /// The file.
        path: String,
        /// Its key's length in bytes.
        len: usize,
        /// [`MIN_KEY_BYTES`].
        min: usize,
    },
}

/// Shortest key accepted from a key file, in bytes (after trimming
/// whitespace): HMAC-SHA256 keys shorter than its 32-byte output weaken it.
pub const MIN_KEY_BYTES: usize = 32;

impl DeviceKeys {
    /// Keys given as raw bytes (surrounding whitespace is *not* trimmed here).
    pub fn from_keys(keys: Vec<Vec<u8>>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::None);
        }
        if keys.iter().any(Vec::is_empty) {
            return Err(KeyError::Empty("(inline)".into()));
        }
        let keyed = keys.iter().map(|k| mac(k)).collect();
        Ok(DeviceKeys { keys, keyed })
    }

    /// Loads one key per file: the file's content with surrounding
    /// whitespace trimmed, used as raw bytes (not hex-decoded), at least
    /// [`MIN_KEY_BYTES`] long ([`KeyError::TooShort`] otherwise).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, KeyError> {
        let mut keys = Vec::with_capacity(paths.len());
        for p in paths {
            let path = p.as_ref().display().to_string();
            let raw = std::fs::read(p).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            let key = raw.trim_ascii();
            if key.is_empty() {
                return Err(KeyError::Empty(path));
            }
            if key.len() < MIN_KEY_BYTES {
                return Err(KeyError::TooShort {
                    path,
                    len: key.len(),
                    min: MIN_KEY_BYTES,
                });
            }
            keys.push(key.to_vec());
        }
        Self::from_keys(keys)
    }

    /// The token of `device_id` under the first key, lowercase hex: what
    /// `ha-admin token` prints and a device is provisioned with.
    pub fn token(&self, device_id: &str) -> String {
        token_for(&self.keys[0], device_id)
    }

    /// Checks an `Authorization` header value and returns the device id.
    pub fn verify(&self, header: Option<&[u8]>) -> Result<String, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let mut buf = [0u8; BASIC_ON_STACK];
        let mut heap = Vec::new();
        let (device_id, token) = parse_basic(header, &mut buf, &mut heap)?;
        self.verify_token(device_id, token)?;
        Ok(device_id.to_owned())
    }

    /// Checks a device id and its token (hex, either case) given apart,
    /// e.g. as an MQTT username and password.
    pub fn verify_token(&self, device_id: &str, token: &str) -> Result<(), AuthError> {
        let token = decode_hex(token.as_bytes()).ok_or(AuthError::WrongToken)?;
        for keyed in &self.keyed {
            let mut mac = keyed.clone();
            mac.update(device_id.as_bytes());
            if mac.verify_slice(&token).is_ok() {
                return Ok(());
            }
        }
        Err(AuthError::WrongToken)
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this never fails.
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// `hex(HMAC-SHA256(key, device_id))`, lowercase.
pub fn token_for(key: &[u8], device_id: &str) -> String {
    let mut m = mac(key);
    m.update(device_id.as_bytes());
    let tag = m.finalize().into_bytes();
    let mut out = String::with_capacity(tag.len() * 2);
    for b in tag.iter() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Decoded `Basic` credentials up to this size (a 64-character id, `:`
/// and a 64-digit token is 129) are decoded on the stack.
const BASIC_ON_STACK: usize = 192;

/// `(user, password)` of a `Basic` header, split at the **last** `:`:
/// device ids may contain `:` (`[A-Za-z0-9._:-]`), tokens are hex. Decodes
/// into `buf` when it fits, else into `heap`.
fn parse_basic<'a>(
    header: &[u8],
    buf: &'a mut [u8; BASIC_ON_STACK],
    heap: &'a mut Vec<u8>,
) -> Result<(&'a str, &'a str), AuthError> {
    let rest = header
        .strip_prefix(b"Basic ")
        .or_else(|| header.strip_prefix(b"basic "))
        .ok_or(AuthError::Malformed)?;
    let rest = rest.trim_ascii();
    let engine = &base64::engine::general_purpose::STANDARD;
    let decoded: &[u8] = match engine.decode_slice(rest, &mut buf[..]) {
        Ok(n) => &buf[..n],
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
            *heap = engine.decode(rest).map_err(|_| AuthError::Malformed)?;
            heap
        }
        Err(base64::DecodeSliceError::DecodeError(_)) => return Err(AuthError::Malformed),
    };
    let text = std::str::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let (user, password) = text.rsplit_once(':').ok_or(AuthError::Malformed)?;
    if user.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok((user, password))
}

/// Hex (either case) to bytes; `None` unless exactly 32 bytes.
fn decode_hex(s: &[u8]) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, p) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = nibble(p[0])? << 4 | nibble(p[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {b64}").into_bytes()
    }

    const VECTOR: &str = "c37c7d255fd51dc2cfb9ebdce6295157ad0cbcda9ecfa4f383dd5ba011c326c9";

    #[test]
    fn matches_the_published_test_vector() {
        let keys = DeviceKeys::from_keys(vec![b"test-key".to_vec()]).unwrap();
        assert_eq!(keys.token("dev-00001"), VECTOR);
        assert_eq!(
            keys.verify(Some(&basic("dev-00001", VECTOR))),
            Ok("dev-00001".into())
        );
        let upper = VECTOR.to_uppercase();
        assert_eq!(
            keys.verify(Some(&basic("dev-00001", &upper))),
            Ok("dev-00001".into())
        );
    }

    #[test]
    fn refuses_wrong_missing_and_malformed_credentials() {
        let keys = DeviceKeys::from_keys(vec![b"test-key".to_vec()]).unwrap();
        assert_eq!(keys.verify(None), Err(AuthError::Missing));
        assert_eq!(keys.verify(Some(b"Bearer x")), Err(AuthError::Malformed));
        assert_eq!(keys.verify(Some(b"Basic !!!")), Err(AuthError::Malformed));
        assert_eq!(
            keys.verify(Some(&basic("", VECTOR))),
            Err(AuthError::Malformed)
        );
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("dev")
        );
        assert_eq!(
            keys.verify(Some(no_colon.as_bytes())),
            Err(AuthError::Malformed)
        );
        // The token of another device, a truncated token, garbage.
        assert_eq!(
            keys.verify(Some(&basic("dev-00002", VECTOR))),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            keys.verify(Some(&basic("dev-00001", &VECTOR[..62]))),
            Err(AuthError::WrongToken)
        );
        assert_eq!(
            keys.verify(Some(&basic("dev-00001", &"zz".repeat(32)))),
            Err(AuthError::WrongToken)
        );
    }

    #[test]
    fn credentials_too_long_for_the_stack_buffer_are_still_checked() {
        let keys = DeviceKeys::from_keys(vec![b"test-key".to_vec()]).unwrap();
        // Decoded past BASIC_ON_STACK: the same answers as short ones.
        let long_id = "d".repeat(BASIC_ON_STACK);
        let token = keys.token(&long_id);
        assert_eq!(
            keys.verify(Some(&basic(&long_id, &token))),
            Ok(long_id.clone())
        );
        assert_eq!(
            keys.verify(Some(&basic(&long_id, VECTOR))),
            Err(AuthError::WrongToken)
        );
        let no_colon = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("x".repeat(2 * BASIC_ON_STACK))
        );
        assert_eq!(
            keys.verify(Some(no_colon.as_bytes())),
            Err(AuthError::Malformed)
        );
        let bad_base64 = format!("Basic {}!", "A".repeat(4 * BASIC_ON_STACK));
        assert_eq!(
            keys.verify(Some(bad_base64.as_bytes())),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn device_ids_with_colons_authenticate() {
        let keys = DeviceKeys::from_keys(vec![b"test-key".to_vec()]).unwrap();
        for id in ["dev:1", "site:a:b", "x:"] {
            let token = keys.token(id);
            assert_eq!(keys.verify(Some(&basic(id, &token))), Ok(id.into()), "{id}");
        }
        // A token can never contain `:`, so a `:` after the last one is
        // part of a wrong token, not of the id.
        let token = keys.token("dev");
        assert_eq!(
            keys.verify(Some(&basic("dev", &format!("{token}:")))),
            Err(AuthError::WrongToken)
        );
    }

    #[test]
    fn key_files_trim_and_refuse_short_keys() {
        let dir = std::env::temp_dir().join(format!("ha-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let long = dir.join("long.key");
        std::fs::write(&long, format!("{}\n", "ab".repeat(16))).unwrap();
        let keys = DeviceKeys::from_files(&[&long]).unwrap();
        assert_eq!(keys.token("d"), token_for("ab".repeat(16).as_bytes(), "d"));
        let short = dir.join("short.key");
        std::fs::write(&short, "test-key\n").unwrap();
        let err = DeviceKeys::from_files(&[&long, &short]).unwrap_err();
        assert!(
            matches!(
                err,
                KeyError::TooShort {
                    len: 8,
                    min: 32,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("rotate"), "{err}");
        let empty = dir.join("empty.key");
        std::fs::write(&empty, " \n").unwrap();
        assert!(matches!(
            DeviceKeys::from_files(&[&empty]),
            Err(KeyError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn any_loaded_key_is_accepted_during_rotation() {
        let old = DeviceKeys::from_keys(vec![b"old".to_vec()]).unwrap();
        let both = DeviceKeys::from_keys(vec![b"new".to_vec(), b"old".to_vec()]).unwrap();
        let token = old.token("dev-1");
        assert_eq!(
            both.verify(Some(&basic("dev-1", &token))),
            Ok("dev-1".into())
        );
        assert_ne!(
            both.token("dev-1"),
            token,
            "new tokens come from the first key"
        );
        assert!(DeviceKeys::from_keys(vec![]).is_err());
        assert_eq!(format!("{both:?}"), "DeviceKeys(2 keys)");
    }
}
