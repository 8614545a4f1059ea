//! API key format: `tg_` + 22 base62 characters (128 random bits) + 6 base62
//! characters of CRC32 over the first part. The checksum lets a mistyped key
//! be rejected before the database is asked.

pub const KEY_PREFIX: &str = "tg_";
const BODY_LEN: usize = 22;
const CHECK_LEN: usize = 6;
pub const KEY_LEN: usize = KEY_PREFIX.len() + BODY_LEN + CHECK_LEN;
/// Characters of a key shown in lists: `tg_` plus the first 8 of the body.
pub const DISPLAY_PREFIX_LEN: usize = KEY_PREFIX.len() + 8;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62(mut n: u128, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    out.into_iter().map(char::from).collect()
}

fn checksum(body: &str) -> String {
    base62(crc32fast::hash(body.as_bytes()) as u128, CHECK_LEN)
}

/// Builds a key from 16 random bytes (the caller draws them from the OS CSPRNG).
pub fn encode(random: [u8; 16]) -> String {
    let body = format!(
        "{KEY_PREFIX}{}",
        base62(u128::from_be_bytes(random), BODY_LEN)
    );
    let check = checksum(&body);
    format!("{body}{check}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormatError {
    Prefix,
    Length,
    Characters,
    Checksum,
}

impl std::fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyFormatError::Prefix => "API keys start with `tg_`",
            KeyFormatError::Length => "the API key has the wrong length",
            KeyFormatError::Characters => "the API key contains characters that keys never have",
            KeyFormatError::Checksum => {
                "the API key's checksum does not match; it was probably mistyped or truncated"
            }
        })
    }
}

/// Checks a presented key's shape and checksum without any lookup.
pub fn check_format(key: &str) -> Result<(), KeyFormatError> {
    if !key.starts_with(KEY_PREFIX) {
        return Err(KeyFormatError::Prefix);
    }
    if key.len() != KEY_LEN {
        return Err(KeyFormatError::Length);
    }
    if !key
        .bytes()
        .skip(KEY_PREFIX.len())
        .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(KeyFormatError::Characters);
    }
    let (body, check) = key.split_at(KEY_LEN - CHECK_LEN);
    if checksum(body) != check {
        return Err(KeyFormatError::Checksum);
    }
    Ok(())
}

/// The part of a key shown in lists.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_typos() {
        let key = encode([7u8; 16]);
        assert_eq!(key.len(), KEY_LEN);
        assert_eq!(check_format(&key), Ok(()));
        assert_eq!(display_prefix(&key).len(), DISPLAY_PREFIX_LEN);
        // Change one character anywhere after the prefix: the checksum catches it.
        for i in KEY_PREFIX.len()..key.len() {
            let mut b = key.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(b).unwrap();
            assert_eq!(check_format(&typo), Err(KeyFormatError::Checksum), "{typo}");
        }
        assert_eq!(check_format("sk-abc"), Err(KeyFormatError::Prefix));
        assert_eq!(
            check_format(&key[..KEY_LEN - 1]),
            Err(KeyFormatError::Length)
        );
        assert_eq!(
            check_format(&format!("{}!{}", &key[..5], &key[6..])),
            Err(KeyFormatError::Characters)
        );
        assert_ne!(encode([0u8; 16]), encode([1u8; 16]));
    }
}
