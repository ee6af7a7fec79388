//! Revision hashes: the SHA-256 of a strategy module's exact bytes.
//!
//! A hash is written `sha256:<64 lowercase hex>` in JSON and selectors, and as bare
//! `<64 lowercase hex>` in directory names (SPEC §1.1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The `sha256:` prefix used when a hash is written in JSON or in a selector.
pub const SHA256_PREFIX: &str = "sha256:";

/// Number of hex digits in a full SHA-256 hash.
pub const HEX_LEN: usize = 64;

/// Shortest hex prefix accepted wherever a hash is (git-style abbreviation).
pub const MIN_PREFIX_LEN: usize = 8;

/// A revision's SHA-256 hash.
///
/// `Display` and `Debug` write `sha256:<hex>`; [`RevisionHash::to_hex`] gives the bare hex.
/// Serialised (serde) as the string `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RevisionHash([u8; 32]);

impl RevisionHash {
    /// Hashes `bytes` (exactly as given, no normalisation).
    pub fn of(bytes: &[u8]) -> RevisionHash {
        RevisionHash(Sha256::digest(bytes).into())
    }

    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> RevisionHash {
        RevisionHash(bytes)
    }

    /// The raw digest bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bare lowercase hex form (64 characters, no `sha256:` prefix), as used in directory names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Whether this hash's hex form starts with `prefix` (hex digits, any case).
    ///
    /// An empty prefix matches; a prefix longer than 64 characters or containing a non-hex
    /// character never matches. Does not allocate.
    pub fn has_hex_prefix(&self, prefix: &str) -> bool {
        let p = prefix.as_bytes();
        if p.len() > HEX_LEN {
            return false;
        }
        p.iter().enumerate().all(|(i, &c)| {
            let byte = self.0[i / 2];
            let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0f };
            hex_value(c) == Some(nibble)
        })
    }
}

impl fmt::Display for RevisionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHA256_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RevisionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a revision hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    /// The input is empty (or just `sha256:`).
    #[error(
        "invalid revision hash {}: empty; expected \"sha256:<64 hex digits>\" or 64 hex digits",
        crate::names::Shown(input)
    )]
    Empty {
        /// The offending input.
        input: String,
    },
    /// The input has an algorithm prefix other than `sha256:`.
    #[error(
        "invalid revision hash {}: unsupported algorithm {}; only \"sha256:\" is supported",
        crate::names::Shown(input),
        crate::names::Shown(algorithm)
    )]
    UnsupportedAlgorithm {
        /// The offending input.
        input: String,
        /// The text before the first `:`.
        algorithm: String,
    },
    /// A character that is not a hex digit.
    #[error(
        "invalid revision hash {}: character {ch:?} at position {position} is not a hex digit",
        crate::names::Shown(input)
    )]
    NotHex {
        /// The offending input.
        input: String,
        /// The first non-hex character.
        ch: char,
        /// Its 1-based character position within the hex part.
        position: usize,
    },
    /// The hex part does not have exactly 64 digits.
    #[error("invalid revision hash {}: expected 64 hex digits, got {len}", crate::names::Shown(input))]
    Length {
        /// The offending input.
        input: String,
        /// The number of hex digits found.
        len: usize,
    },
}

impl FromStr for RevisionHash {
    type Err = HashParseError;

    /// Accepts `sha256:<64 hex>` or bare `<64 hex>`, hex in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex_part = match s.strip_prefix(SHA256_PREFIX) {
            Some(rest) => rest,
            None => {
                if let Some((algorithm, _)) = s.split_once(':') {
                    return Err(HashParseError::UnsupportedAlgorithm {
                        input: s.to_owned(),
                        algorithm: algorithm.to_owned(),
                    });
                }
                s
            }
        };
        if hex_part.is_empty() {
            return Err(HashParseError::Empty { input: s.to_owned() });
        }
        if let Some((i, ch)) = hex_part.chars().enumerate().find(|&(_, c)| !c.is_ascii_hexdigit()) {
            return Err(HashParseError::NotHex { input: s.to_owned(), ch, position: i + 1 });
        }
        if hex_part.len() != HEX_LEN {
            return Err(HashParseError::Length { input: s.to_owned(), len: hex_part.len() });
        }
        let digits = hex_part.as_bytes();
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            // Both digits were checked above.
            let hi = hex_value(digits[2 * i]).unwrap_or(0);
            let lo = hex_value(digits[2 * i + 1]).unwrap_or(0);
            *byte = (hi << 4) | lo;
        }
        Ok(RevisionHash(out))
    }
}

impl Serialize for RevisionHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RevisionHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RevisionHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a revision hash \"sha256:<64 hex digits>\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RevisionHash, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The JSON Schema of the serialised form: `sha256:` and 64 lowercase hex digits.
impl schemars::JsonSchema for RevisionHash {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RevisionHash".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A revision's SHA-256: `sha256:` and 64 lowercase hex digits.",
            "type": "string",
            "pattern": "^sha256:[0-9a-f]{64}$",
        })
    }
}

/// Whether `s` is 8 to 64 ASCII hex digits (any case): a full hash or an acceptable prefix.
pub fn is_hex_prefix(s: &str) -> bool {
    (MIN_PREFIX_LEN..=HEX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The value of one ASCII hex digit (any case).
pub(crate) const fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn of_known_vectors() {
        assert_eq!(RevisionHash::of(b"").to_hex(), EMPTY_SHA);
        assert_eq!(RevisionHash::of(b"abc").to_hex(), ABC_SHA);
    }

    #[test]
    fn of_does_not_normalise() {
        assert_ne!(RevisionHash::of(b"a\n"), RevisionHash::of(b"a\r\n"));
        assert_ne!(RevisionHash::of(b"a"), RevisionHash::of(b"\xEF\xBB\xBFa"));
        assert_ne!(RevisionHash::of(b"a"), RevisionHash::of(b"a\n"));
    }

    #[test]
    fn bytes_round_trip() {
        let h = RevisionHash::of(b"abc");
        assert_eq!(RevisionHash::from_bytes(*h.as_bytes()), h);
        assert_eq!(h.as_bytes()[0], 0xba);
    }

    #[test]
    fn display_debug_hex() {
        let h = RevisionHash::of(b"abc");
        assert_eq!(h.to_hex(), ABC_SHA);
        assert_eq!(h.to_string(), format!("sha256:{ABC_SHA}"));
        assert_eq!(format!("{h:?}"), format!("sha256:{ABC_SHA}"));
    }

    #[test]
    fn parse_accepted_forms() {
        let h = RevisionHash::of(b"abc");
        assert_eq!(format!("sha256:{ABC_SHA}").parse::<RevisionHash>(), Ok(h));
        assert_eq!(ABC_SHA.parse::<RevisionHash>(), Ok(h));
        assert_eq!(ABC_SHA.to_uppercase().parse::<RevisionHash>(), Ok(h));
        assert_eq!(format!("sha256:{}", ABC_SHA.to_uppercase()).parse::<RevisionHash>(), Ok(h));
    }

    #[test]
    fn parse_rejections() {
        type Check = fn(&HashParseError) -> bool;
        let cases: Vec<(String, Check)> = vec![
            ("".into(), |e| matches!(e, HashParseError::Empty { .. })),
            ("sha256:".into(), |e| matches!(e, HashParseError::Empty { .. })),
            (
                format!("sha1:{ABC_SHA}"),
                |e| matches!(e, HashParseError::UnsupportedAlgorithm { algorithm, .. } if algorithm == "sha1"),
            ),
            (format!("SHA256:{ABC_SHA}"), |e| matches!(e, HashParseError::UnsupportedAlgorithm { .. })),
            (format!("sha256:sha256:{ABC_SHA}"), |e| matches!(e, HashParseError::NotHex { ch: 's', position: 1, .. })),
            (ABC_SHA[..63].into(), |e| matches!(e, HashParseError::Length { len: 63, .. })),
            (format!("{ABC_SHA}0"), |e| matches!(e, HashParseError::Length { len: 65, .. })),
            (format!("sha256:{}", &ABC_SHA[..8]), |e| matches!(e, HashParseError::Length { len: 8, .. })),
            (format!("{}g", &ABC_SHA[..63]), |e| matches!(e, HashParseError::NotHex { ch: 'g', position: 64, .. })),
            (format!(" {ABC_SHA}"), |e| matches!(e, HashParseError::NotHex { ch: ' ', .. })),
            (format!("{ABC_SHA}\n"), |e| matches!(e, HashParseError::NotHex { ch: '\n', .. })),
            (format!("{}é", &ABC_SHA[..62]), |e| matches!(e, HashParseError::NotHex { ch: 'é', .. })),
        ];
        for (input, check) in cases {
            let err = input.parse::<RevisionHash>().unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(err.to_string().starts_with("invalid revision hash"), "{err}");
        }
    }

    #[test]
    fn error_messages() {
        let e = "sha256:xyz".parse::<RevisionHash>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid revision hash \"sha256:xyz\": character 'x' at position 1 is not a hex digit"
        );
        let e = "abcd".parse::<RevisionHash>().unwrap_err();
        assert_eq!(e.to_string(), "invalid revision hash \"abcd\": expected 64 hex digits, got 4");
        let e = "md5:abcd".parse::<RevisionHash>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid revision hash \"md5:abcd\": unsupported algorithm \"md5\"; only \"sha256:\" is supported"
        );
    }

    #[test]
    fn serde_round_trip() {
        let h = RevisionHash::of(b"abc");
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"sha256:{ABC_SHA}\""));
        assert_eq!(serde_json::from_str::<RevisionHash>(&json).unwrap(), h);
        // Deserialize accepts every FromStr form.
        let bare = format!("\"{}\"", ABC_SHA.to_uppercase());
        assert_eq!(serde_json::from_str::<RevisionHash>(&bare).unwrap(), h);
        // As a map key too.
        let map: std::collections::BTreeMap<RevisionHash, u8> =
            serde_json::from_str(&format!("{{\"sha256:{ABC_SHA}\": 1}}")).unwrap();
        assert_eq!(map[&h], 1);
        assert_eq!(serde_json::to_string(&map).unwrap(), format!("{{\"sha256:{ABC_SHA}\":1}}"));
    }

    #[test]
    fn serde_rejections() {
        for bad in ["\"\"", "\"sha256:abc\"", "42", "null", "\"md5:00\""] {
            assert!(serde_json::from_str::<RevisionHash>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<RevisionHash>("\"sha256:abc\"").unwrap_err();
        assert!(err.to_string().contains("expected 64 hex digits, got 3"), "{err}");
    }

    #[test]
    fn hex_prefix_predicate() {
        assert!(is_hex_prefix("deadbeef"));
        assert!(is_hex_prefix("DEADBEEF"));
        assert!(is_hex_prefix(ABC_SHA));
        assert!(!is_hex_prefix("deadbee"));
        assert!(!is_hex_prefix(""));
        assert!(!is_hex_prefix(&format!("{ABC_SHA}0")));
        assert!(!is_hex_prefix("deadbeeg"));
        assert!(!is_hex_prefix("sha256:deadbeef"));
    }

    #[test]
    fn has_hex_prefix() {
        let h = RevisionHash::of(b"abc");
        assert!(h.has_hex_prefix(""));
        assert!(h.has_hex_prefix("ba7816bf"));
        assert!(h.has_hex_prefix("BA7816BF"));
        assert!(h.has_hex_prefix(ABC_SHA));
        assert!(!h.has_hex_prefix("ba7816bg"));
        assert!(!h.has_hex_prefix("ba7816be"));
        assert!(!h.has_hex_prefix(&format!("{ABC_SHA}0")));
    }

    #[test]
    fn ordering_follows_bytes() {
        let a = RevisionHash::from_bytes([0; 32]);
        let b = RevisionHash::from_bytes([0xff; 32]);
        assert!(a < b);
    }

    proptest! {
        #[test]
        fn prop_parse_never_panics(s in ".*") {
            let _ = s.parse::<RevisionHash>();
        }

        #[test]
        fn prop_display_parse_round_trip(bytes in any::<[u8; 32]>()) {
            let h = RevisionHash::from_bytes(bytes);
            prop_assert_eq!(h.to_string().parse::<RevisionHash>(), Ok(h));
            prop_assert_eq!(h.to_hex().parse::<RevisionHash>(), Ok(h));
            prop_assert_eq!(h.to_hex().to_uppercase().parse::<RevisionHash>(), Ok(h));
            prop_assert_eq!(h.to_hex(), hex::encode(bytes));
            let json = serde_json::to_string(&h).unwrap();
            prop_assert_eq!(serde_json::from_str::<RevisionHash>(&json).unwrap(), h);
        }

        #[test]
        fn prop_prefixes_match(bytes in any::<[u8; 32]>(), len in 0usize..=64) {
            let h = RevisionHash::from_bytes(bytes);
            let hex = h.to_hex();
            prop_assert!(h.has_hex_prefix(&hex[..len]));
            prop_assert_eq!(is_hex_prefix(&hex[..len]), len >= 8);
        }
    }
}
