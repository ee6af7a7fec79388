//! Selectors: how callers name a revision (SPEC §1.3).
//!
//! | form                                   | parses to                       |
//! |----------------------------------------|---------------------------------|
//! | `name`                                 | [`Selector::Name`]              |
//! | `name:tag`                             | [`Selector::Tag`]               |
//! | `name@sha256:<hex>`, `name@<hex>`      | [`Selector::Revision`]          |
//! | `sha256:<hex>`                         | [`Selector::Hash`]              |
//! | bare hex that is not a valid name      | [`Selector::Hash`]              |
//!
//! `<hex>` is a full 64-digit hash or an (unambiguous, checked by the resolver) prefix of at
//! least 8 digits, in any case; it is normalised to lower case. A bare token that is both a valid
//! strategy name and hex (`deadbeef`) parses as a [`Selector::Name`]; the resolver tries the
//! strategy first and then [`Selector::name_as_hash`].
//!
//! The canonical form ([`Selector::canonical`]) is `name`, `name:tag` (`name:latest` → `name`),
//! `name@sha256:<hex>` or `sha256:<hex>`, all hex lower case.

use std::fmt;
use std::str::FromStr;

use crate::hash::{HEX_LEN, MIN_PREFIX_LEN, RevisionHash, SHA256_PREFIX, is_hex_prefix};
use crate::names::{
    LATEST_TAG, NameError, Shown, is_valid_strategy_name, is_valid_tag, validate_strategy_name, validate_tag,
};

/// A full revision hash or a hex prefix of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashRef {
    /// A full hash (64 hex digits were given).
    Full(RevisionHash),
    /// A lowercase hex prefix of 8 to 63 digits; the resolver expands it if unambiguous.
    Prefix(String),
}

impl HashRef {
    /// Parses `sha256:<hex>` or bare `<hex>` where `<hex>` is 8 to 64 hex digits (any case).
    pub fn parse(s: &str) -> Result<HashRef, SelectorError> {
        parse_hash_part(s).map_err(|problem| SelectorError::InvalidHash {
            selector: s.to_owned(),
            hash: s.to_owned(),
            problem,
        })
    }

    /// Whether `h` is the hash this refers to (equal, or starting with the prefix).
    pub fn matches(&self, h: &RevisionHash) -> bool {
        match self {
            HashRef::Full(full) => full == h,
            HashRef::Prefix(p) => p.len() >= MIN_PREFIX_LEN && h.has_hex_prefix(p),
        }
    }

    /// The full hash, if this is one.
    pub fn as_full(&self) -> Option<&RevisionHash> {
        match self {
            HashRef::Full(h) => Some(h),
            HashRef::Prefix(_) => None,
        }
    }

    /// Builds a reference from 8 to 64 hex digits (any case); `None` otherwise.
    fn from_hex(hex: &str) -> Option<HashRef> {
        if !is_hex_prefix(hex) {
            return None;
        }
        if hex.len() == HEX_LEN {
            hex.parse().ok().map(HashRef::Full)
        } else {
            Some(HashRef::Prefix(hex.to_ascii_lowercase()))
        }
    }
}

impl fmt::Display for HashRef {
    /// `sha256:<hex>` or `sha256:<prefix>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashRef::Full(h) => fmt::Display::fmt(h, f),
            HashRef::Prefix(p) => write!(f, "{SHA256_PREFIX}{p}"),
        }
    }
}

impl FromStr for HashRef {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HashRef::parse(s)
    }
}

/// A parsed selector (SPEC §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `name` — what `latest` points to.
    ///
    /// NOTE: a bare token that is a valid strategy name may also be a hex hash or prefix (e.g.
    /// `deadbeef`, or 64 hex digits); the parser keeps it as `Name` and the resolver tries the
    /// strategy first, then the hash ([`Selector::name_as_hash`]).
    Name {
        /// The strategy name.
        strategy: String,
    },
    /// `name:tag` (tag case-sensitive; `name:latest` parses to `Tag { tag: "latest" }` but its
    /// canonical form is `name`).
    Tag {
        /// The strategy name.
        strategy: String,
        /// The tag.
        tag: String,
    },
    /// `name@sha256:<hex>`, `name@<hex>`, `name@<prefix>`, `name@sha256:<prefix>`.
    Revision {
        /// The strategy name.
        strategy: String,
        /// The revision within that strategy.
        hash: HashRef,
    },
    /// `sha256:<hex>` or `sha256:<prefix>`: that revision in whichever strategy owns it.
    ///
    /// Bare hex parses as [`Selector::Name`] when it is a valid strategy name (lower case, at
    /// most 64 characters), otherwise (e.g. upper-case hex) as `Hash`.
    Hash(HashRef),
}

/// What is wrong with the hash part of a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashProblem {
    /// Nothing after `@` or `sha256:`.
    Empty,
    /// An algorithm prefix other than `sha256:`.
    UnsupportedAlgorithm,
    /// A character that is not a hex digit.
    NotHex {
        /// The character.
        ch: char,
        /// Its 1-based character position within the hash as shown in the message.
        position: usize,
    },
    /// Fewer than 8 hex digits.
    TooShort {
        /// The number of hex digits.
        len: usize,
    },
    /// More than 64 hex digits.
    TooLong {
        /// The number of hex digits.
        len: usize,
    },
}

impl fmt::Display for HashProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashProblem::Empty => f.write_str("missing hex digits"),
            HashProblem::UnsupportedAlgorithm => {
                f.write_str("unsupported hash algorithm; expected \"sha256:\" followed by hex digits")
            }
            HashProblem::NotHex { ch, position } => {
                write!(f, "character {ch:?} at position {position} is not a hex digit")
            }
            HashProblem::TooShort { len } => {
                write!(f, "too short ({len} hex digits; a hash prefix needs at least {MIN_PREFIX_LEN})")
            }
            HashProblem::TooLong { len } => {
                write!(f, "too long ({len} hex digits; a full hash has {HEX_LEN})")
            }
        }
    }
}

/// Why a string is not a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The input is empty.
    #[error("empty selector; expected name, name:tag, name@sha256:<hex> or sha256:<hex>")]
    Empty,
    /// The input contains whitespace (it is never trimmed).
    #[error("invalid selector {}: contains whitespace", Shown(selector))]
    Whitespace {
        /// The offending selector.
        selector: String,
    },
    /// More than one `@`.
    #[error("invalid selector {}: more than one '@'", Shown(selector))]
    MultipleAt {
        /// The offending selector.
        selector: String,
    },
    /// More than one `:`.
    #[error("invalid selector {}: more than one ':'", Shown(selector))]
    MultipleColon {
        /// The offending selector.
        selector: String,
    },
    /// Both a `:tag` and an `@hash`.
    #[error("invalid selector {}: cannot combine a tag (':') with a revision ('@')", Shown(selector))]
    TagAndRevision {
        /// The offending selector.
        selector: String,
    },
    /// Nothing before `@` or `:`.
    #[error("invalid selector {}: missing strategy name before '{separator}'", Shown(selector))]
    MissingStrategy {
        /// The offending selector.
        selector: String,
        /// The separator (`@` or `:`).
        separator: char,
    },
    /// Nothing after `name:`.
    #[error("invalid selector {}: missing tag after ':'", Shown(selector))]
    MissingTag {
        /// The offending selector.
        selector: String,
    },
    /// The strategy name or the tag is invalid.
    #[error(
        "invalid {} {} in selector {}: {}",
        error.kind(),
        Shown(error.value()),
        Shown(selector),
        error.reason()
    )]
    InvalidName {
        /// The offending selector.
        selector: String,
        /// What is wrong with the name or tag.
        error: NameError,
    },
    /// The hash (or prefix) is invalid.
    #[error("invalid hash {} in selector {}: {problem}", Shown(hash), Shown(selector))]
    InvalidHash {
        /// The offending selector.
        selector: String,
        /// The hash part as given (after `@`, or the whole selector).
        hash: String,
        /// What is wrong with it.
        problem: HashProblem,
    },
}

impl SelectorError {
    /// The selector that failed to parse.
    pub fn selector(&self) -> &str {
        match self {
            SelectorError::Empty => "",
            SelectorError::Whitespace { selector }
            | SelectorError::MultipleAt { selector }
            | SelectorError::MultipleColon { selector }
            | SelectorError::TagAndRevision { selector }
            | SelectorError::MissingStrategy { selector, .. }
            | SelectorError::MissingTag { selector }
            | SelectorError::InvalidName { selector, .. }
            | SelectorError::InvalidHash { selector, .. } => selector,
        }
    }
}

/// Parses the hash part of a selector: optional `sha256:` then 8..=64 hex digits.
fn parse_hash_part(s: &str) -> Result<HashRef, HashProblem> {
    let (digits, offset) = match s.strip_prefix(SHA256_PREFIX) {
        Some(rest) => (rest, SHA256_PREFIX.len()),
        None if s.contains(':') => return Err(HashProblem::UnsupportedAlgorithm),
        None => (s, 0),
    };
    if digits.is_empty() {
        return Err(HashProblem::Empty);
    }
    if let Some((i, ch)) = digits.chars().enumerate().find(|&(_, c)| !c.is_ascii_hexdigit()) {
        return Err(HashProblem::NotHex { ch, position: offset + i + 1 });
    }
    match digits.len() {
        len if len < MIN_PREFIX_LEN => Err(HashProblem::TooShort { len }),
        len if len > HEX_LEN => Err(HashProblem::TooLong { len }),
        _ => HashRef::from_hex(digits).ok_or(HashProblem::Empty),
    }
}

/// Lowercase hex, 8..=64 digits: the canonical spelling of a hash part (after `sha256:`).
fn is_canonical_hex(s: &str) -> bool {
    (MIN_PREFIX_LEN..=HEX_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Selector {
    /// Parses a selector (see the module docs for the accepted forms).
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let owned = || s.to_owned();
        if s.is_empty() {
            return Err(SelectorError::Empty);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(SelectorError::Whitespace { selector: owned() });
        }
        let colons = s.bytes().filter(|&b| b == b':').count();
        let name_error = |error: NameError| SelectorError::InvalidName { selector: s.to_owned(), error };
        let hash_error = |hash: &str, problem: HashProblem| SelectorError::InvalidHash {
            selector: s.to_owned(),
            hash: hash.to_owned(),
            problem,
        };

        if let Some((strategy, rev)) = s.split_once('@') {
            if rev.contains('@') {
                return Err(SelectorError::MultipleAt { selector: owned() });
            }
            if strategy.is_empty() {
                return Err(SelectorError::MissingStrategy { selector: owned(), separator: '@' });
            }
            if strategy.contains(':') {
                return Err(SelectorError::TagAndRevision { selector: owned() });
            }
            if colons > 1 {
                return Err(SelectorError::MultipleColon { selector: owned() });
            }
            validate_strategy_name(strategy).map_err(name_error)?;
            let hash = parse_hash_part(rev).map_err(|p| hash_error(rev, p))?;
            return Ok(Selector::Revision { strategy: strategy.to_owned(), hash });
        }

        if colons > 1 {
            return Err(SelectorError::MultipleColon { selector: owned() });
        }

        match s.split_once(':') {
            None => {
                if is_valid_strategy_name(s) {
                    return Ok(Selector::Name { strategy: owned() });
                }
                if s.bytes().all(|b| b.is_ascii_hexdigit()) && s.len() >= MIN_PREFIX_LEN {
                    // Upper-case (or too long) hex: a hash, not a name.
                    let hash = parse_hash_part(s).map_err(|p| hash_error(s, p))?;
                    return Ok(Selector::Hash(hash));
                }
                validate_strategy_name(s).map_err(name_error)?;
                // Unreachable: `is_valid_strategy_name` and `validate_strategy_name` agree.
                Ok(Selector::Name { strategy: owned() })
            }
            Some((left, right)) => {
                if left.eq_ignore_ascii_case("sha256") {
                    let hash = parse_hash_part(s).map_err(|p| hash_error(s, p))?;
                    return Ok(Selector::Hash(hash));
                }
                if left.is_empty() {
                    return Err(SelectorError::MissingStrategy { selector: owned(), separator: ':' });
                }
                if right.is_empty() {
                    return Err(SelectorError::MissingTag { selector: owned() });
                }
                validate_strategy_name(left).map_err(name_error)?;
                validate_tag(right).map_err(name_error)?;
                Ok(Selector::Tag { strategy: left.to_owned(), tag: right.to_owned() })
            }
        }
    }

    /// The canonical spelling: `name`, `name:tag` (`name:latest` → `name`),
    /// `name@sha256:<hex>` or `sha256:<hex>`, hex in lower case.
    ///
    /// Parsing the canonical form gives [`Selector::normalize`] of this selector.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// Whether `s` parses and is already in canonical form, i.e.
    /// `Selector::parse(s).is_ok_and(|sel| sel.canonical() == s)`, without allocating.
    pub fn is_canonical_str(s: &str) -> bool {
        if let Some((strategy, rev)) = s.split_once('@') {
            return is_valid_strategy_name(strategy) && rev.strip_prefix(SHA256_PREFIX).is_some_and(is_canonical_hex);
        }
        match s.split_once(':') {
            None => is_valid_strategy_name(s),
            Some(("sha256", hex)) => is_canonical_hex(hex),
            Some((strategy, tag)) => is_valid_strategy_name(strategy) && is_valid_tag(tag) && tag != LATEST_TAG,
        }
    }

    /// The strategy this selector names, if any (`None` for [`Selector::Hash`]).
    pub fn strategy(&self) -> Option<&str> {
        match self {
            Selector::Name { strategy } | Selector::Tag { strategy, .. } | Selector::Revision { strategy, .. } => {
                Some(strategy)
            }
            Selector::Hash(_) => None,
        }
    }

    /// The tag this selector follows: `latest` for [`Selector::Name`], the tag for
    /// [`Selector::Tag`], `None` for selectors that name a revision directly.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Selector::Name { .. } => Some(LATEST_TAG),
            Selector::Tag { tag, .. } => Some(tag),
            Selector::Revision { .. } | Selector::Hash(_) => None,
        }
    }

    /// The hash this selector names directly ([`Selector::Revision`] and [`Selector::Hash`]).
    pub fn hash_ref(&self) -> Option<&HashRef> {
        match self {
            Selector::Revision { hash, .. } | Selector::Hash(hash) => Some(hash),
            Selector::Name { .. } | Selector::Tag { .. } => None,
        }
    }

    /// The hash interpretation of a [`Selector::Name`] whose name is also 8 to 64 hex digits
    /// (`Full` for 64, `Prefix` otherwise); `None` for anything else.
    pub fn name_as_hash(&self) -> Option<HashRef> {
        match self {
            Selector::Name { strategy } => HashRef::from_hex(strategy),
            _ => None,
        }
    }

    /// The same selector with `name:latest` turned into `name`; equal to
    /// `Selector::parse(&self.canonical())`.
    pub fn normalize(self) -> Selector {
        match self {
            Selector::Tag { strategy, tag } if tag == LATEST_TAG => Selector::Name { strategy },
            other => other,
        }
    }
}

impl fmt::Display for Selector {
    /// Writes the canonical form (see [`Selector::canonical`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Name { strategy } => f.write_str(strategy),
            Selector::Tag { strategy, tag } if tag == LATEST_TAG => f.write_str(strategy),
            Selector::Tag { strategy, tag } => write!(f, "{strategy}:{tag}"),
            Selector::Revision { strategy, hash } => write!(f, "{strategy}@{hash}"),
            Selector::Hash(hash) => fmt::Display::fmt(hash, f),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RESERVED_STRATEGY_NAMES;
    use proptest::prelude::*;

    const H: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn full() -> HashRef {
        HashRef::Full(H.parse().unwrap())
    }

    fn prefix(p: &str) -> HashRef {
        HashRef::Prefix(p.to_owned())
    }

    fn name(s: &str) -> Selector {
        Selector::Name { strategy: s.to_owned() }
    }

    fn tag(s: &str, t: &str) -> Selector {
        Selector::Tag { strategy: s.to_owned(), tag: t.to_owned() }
    }

    fn rev(s: &str, h: HashRef) -> Selector {
        Selector::Revision { strategy: s.to_owned(), hash: h }
    }

    #[test]
    fn accepted_forms() {
        let upper = H.to_uppercase();
        let cases: Vec<(String, Selector, String)> = vec![
            // name
            ("momentum".into(), name("momentum"), "momentum".into()),
            ("a".into(), name("a"), "a".into()),
            ("m-r_2.1".into(), name("m-r_2.1"), "m-r_2.1".into()),
            ("sha256".into(), name("sha256"), "sha256".into()),
            ("latest".into(), name("latest"), "latest".into()),
            // bare hex that is a valid name stays a name
            ("deadbeef".into(), name("deadbeef"), "deadbeef".into()),
            ("abc".into(), name("abc"), "abc".into()),
            (H.into(), name(H), H.into()),
            // name:tag
            ("momentum:prod".into(), tag("momentum", "prod"), "momentum:prod".into()),
            ("momentum:v1.2.0".into(), tag("momentum", "v1.2.0"), "momentum:v1.2.0".into()),
            ("momentum:PROD".into(), tag("momentum", "PROD"), "momentum:PROD".into()),
            ("momentum:latest".into(), tag("momentum", "latest"), "momentum".into()),
            ("momentum:Latest".into(), tag("momentum", "Latest"), "momentum:Latest".into()),
            ("m:deadbeef".into(), tag("m", "deadbeef"), "m:deadbeef".into()),
            // name@hash
            (format!("momentum@sha256:{H}"), rev("momentum", full()), format!("momentum@sha256:{H}")),
            (format!("momentum@{H}"), rev("momentum", full()), format!("momentum@sha256:{H}")),
            (format!("momentum@{upper}"), rev("momentum", full()), format!("momentum@sha256:{H}")),
            (format!("momentum@sha256:{upper}"), rev("momentum", full()), format!("momentum@sha256:{H}")),
            ("momentum@ba7816bf".into(), rev("momentum", prefix("ba7816bf")), "momentum@sha256:ba7816bf".into()),
            (
                "momentum@sha256:BA7816BF8F".into(),
                rev("momentum", prefix("ba7816bf8f")),
                "momentum@sha256:ba7816bf8f".into(),
            ),
            (format!("m@{}", &H[..63]), rev("m", prefix(&H[..63])), format!("m@sha256:{}", &H[..63])),
            // sha256:hash
            (format!("sha256:{H}"), Selector::Hash(full()), format!("sha256:{H}")),
            (format!("sha256:{upper}"), Selector::Hash(full()), format!("sha256:{H}")),
            ("sha256:ba7816bf".into(), Selector::Hash(prefix("ba7816bf")), "sha256:ba7816bf".into()),
            ("sha256:12345678".into(), Selector::Hash(prefix("12345678")), "sha256:12345678".into()),
            // bare hex that is not a valid name is a hash
            (upper.clone(), Selector::Hash(full()), format!("sha256:{H}")),
            ("DEADBEEF".into(), Selector::Hash(prefix("deadbeef")), "sha256:deadbeef".into()),
            ("DeadBeef01".into(), Selector::Hash(prefix("deadbeef01")), "sha256:deadbeef01".into()),
        ];
        for (input, expected, canonical) in cases {
            let parsed = Selector::parse(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(parsed, expected, "{input:?}");
            assert_eq!(input.parse::<Selector>().unwrap(), expected, "{input:?}");
            assert_eq!(parsed.canonical(), canonical, "{input:?}");
            assert_eq!(parsed.to_string(), canonical, "{input:?}");
            assert_eq!(Selector::is_canonical_str(&input), input == canonical, "{input:?}");
            assert!(Selector::is_canonical_str(&canonical), "{canonical:?}");
            let reparsed = Selector::parse(&canonical).unwrap();
            assert_eq!(reparsed, parsed.clone().normalize(), "{input:?}");
        }
    }

    #[test]
    fn rejection_classes() {
        type Check = fn(&SelectorError) -> bool;
        let long_hex = format!("{H}0");
        let cases: Vec<(String, Check, &str)> = vec![
            ("".into(), |e| matches!(e, SelectorError::Empty), "empty selector"),
            (" ".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            ("\t\n".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            (" momentum".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            ("momentum ".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            ("momentum :prod".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            ("m\u{a0}x".into(), |e| matches!(e, SelectorError::Whitespace { .. }), "contains whitespace"),
            ("a@b@c".into(), |e| matches!(e, SelectorError::MultipleAt { .. }), "more than one '@'"),
            ("a@@deadbeef".into(), |e| matches!(e, SelectorError::MultipleAt { .. }), "more than one '@'"),
            ("a:b:c".into(), |e| matches!(e, SelectorError::MultipleColon { .. }), "more than one ':'"),
            ("a::b".into(), |e| matches!(e, SelectorError::MultipleColon { .. }), "more than one ':'"),
            (
                "sha256:sha256:deadbeef".into(),
                |e| matches!(e, SelectorError::MultipleColon { .. }),
                "more than one ':'",
            ),
            ("a@sha256:dead:beef".into(), |e| matches!(e, SelectorError::MultipleColon { .. }), "more than one ':'"),
            ("a:prod@deadbeef".into(), |e| matches!(e, SelectorError::TagAndRevision { .. }), "cannot combine a tag"),
            (
                "a:prod@sha256:deadbeef".into(),
                |e| matches!(e, SelectorError::TagAndRevision { .. }),
                "cannot combine a tag",
            ),
            (
                "@deadbeef".into(),
                |e| matches!(e, SelectorError::MissingStrategy { separator: '@', .. }),
                "missing strategy name before '@'",
            ),
            (
                format!("@sha256:{H}"),
                |e| matches!(e, SelectorError::MissingStrategy { separator: '@', .. }),
                "missing strategy name before '@'",
            ),
            (
                ":prod".into(),
                |e| matches!(e, SelectorError::MissingStrategy { separator: ':', .. }),
                "missing strategy name before ':'",
            ),
            (":".into(), |e| matches!(e, SelectorError::MissingStrategy { .. }), "missing strategy name"),
            ("momentum:".into(), |e| matches!(e, SelectorError::MissingTag { .. }), "missing tag after ':'"),
            // invalid names
            (
                "Momentum".into(),
                |e| matches!(e, SelectorError::InvalidName { .. }),
                "invalid strategy name \"Momentum\" in selector \"Momentum\": character 'M'",
            ),
            ("ABC".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "invalid strategy name \"ABC\""),
            ("a/b".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "character '/'"),
            ("a\\b".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "character '\\\\'"),
            ("a..b".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "must not contain \"..\""),
            (".hidden".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "as the first character"),
            ("modules".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "reserved"),
            ("registry:prod".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "reserved"),
            ("refresh@deadbeef".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "reserved"),
            (
                "Mom:prod".into(),
                |e| matches!(e, SelectorError::InvalidName { .. }),
                "invalid strategy name \"Mom\" in selector \"Mom:prod\"",
            ),
            (
                "Mom@deadbeef".into(),
                |e| matches!(e, SelectorError::InvalidName { .. }),
                "invalid strategy name \"Mom\"",
            ),
            (
                "x".repeat(65),
                |e| matches!(e, SelectorError::InvalidName { .. }),
                "too long (65 characters, at most 64)",
            ),
            // 65 lower-case hex digits: too long for a name, so reported as a too-long hash.
            (
                "a".repeat(65),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooLong { len: 65 }, .. }),
                "too long (65 hex digits",
            ),
            // invalid tags
            (
                "x:a/b".into(),
                |e| matches!(e, SelectorError::InvalidName { .. }),
                "invalid tag \"a/b\" in selector \"x:a/b\": character '/' at position 2 is not allowed; tags must match",
            ),
            ("x:a\\b".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "invalid tag"),
            ("x:.v1".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "invalid tag \".v1\""),
            ("x:v1..2".into(), |e| matches!(e, SelectorError::InvalidName { .. }), "must not contain \"..\""),
            (format!("x:{}", "t".repeat(65)), |e| matches!(e, SelectorError::InvalidName { .. }), "too long"),
            // invalid hashes
            (
                "a@".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::Empty, .. }),
                "invalid hash \"\" in selector \"a@\": missing hex digits",
            ),
            (
                "a@sha256:".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::Empty, .. }),
                "missing hex digits",
            ),
            (
                "sha256:".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::Empty, .. }),
                "missing hex digits",
            ),
            (
                "a@deadbee".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooShort { len: 7 }, .. }),
                "too short (7 hex digits; a hash prefix needs at least 8)",
            ),
            (
                "a@sha256:abc".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooShort { len: 3 }, .. }),
                "too short",
            ),
            (
                "sha256:abc".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooShort { len: 3 }, .. }),
                "invalid hash \"sha256:abc\" in selector \"sha256:abc\": too short",
            ),
            (
                format!("a@{long_hex}"),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooLong { len: 65 }, .. }),
                "too long (65 hex digits; a full hash has 64)",
            ),
            (
                format!("sha256:{long_hex}"),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooLong { len: 65 }, .. }),
                "too long",
            ),
            (
                long_hex.clone(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::TooLong { len: 65 }, .. }),
                "too long",
            ),
            (
                "sha256:prod".into(),
                |e| {
                    matches!(
                        e,
                        SelectorError::InvalidHash { problem: HashProblem::NotHex { ch: 'p', position: 8 }, .. }
                    )
                },
                "character 'p' at position 8 is not a hex digit",
            ),
            (
                "sha256:deadbeeg".into(),
                |e| {
                    matches!(
                        e,
                        SelectorError::InvalidHash { problem: HashProblem::NotHex { ch: 'g', position: 15 }, .. }
                    )
                },
                "not a hex digit",
            ),
            (
                "a@deadbeeg".into(),
                |e| {
                    matches!(
                        e,
                        SelectorError::InvalidHash { problem: HashProblem::NotHex { ch: 'g', position: 8 }, .. }
                    )
                },
                "invalid hash \"deadbeeg\" in selector \"a@deadbeeg\"",
            ),
            (
                "a@prod".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::NotHex { .. }, .. }),
                "not a hex digit",
            ),
            (
                "a@md5:deadbeef".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::UnsupportedAlgorithm, .. }),
                "unsupported hash algorithm",
            ),
            (
                "SHA256:deadbeef".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::UnsupportedAlgorithm, .. }),
                "unsupported hash algorithm",
            ),
            (
                "a@SHA256:deadbeef".into(),
                |e| matches!(e, SelectorError::InvalidHash { problem: HashProblem::UnsupportedAlgorithm, .. }),
                "unsupported hash algorithm",
            ),
        ];
        for (input, check, fragment) in cases {
            let err = Selector::parse(&input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
            let msg = err.to_string();
            assert!(msg.contains(fragment), "{input:?}: {msg}");
            assert_eq!(err.selector(), input, "{input:?}");
            assert!(input.parse::<Selector>().is_err());
            assert!(!Selector::is_canonical_str(&input), "{input:?}");
        }
    }

    #[test]
    fn exact_messages() {
        assert_eq!(
            Selector::parse("x:a/b").unwrap_err().to_string(),
            "invalid tag \"a/b\" in selector \"x:a/b\": character '/' at position 2 is not \
             allowed; tags must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} and must not contain \"..\""
        );
        assert_eq!(
            Selector::parse("").unwrap_err().to_string(),
            "empty selector; expected name, name:tag, name@sha256:<hex> or sha256:<hex>"
        );
        assert_eq!(
            Selector::parse("momentum:").unwrap_err().to_string(),
            "invalid selector \"momentum:\": missing tag after ':'"
        );
        assert_eq!(
            Selector::parse("@deadbeef").unwrap_err().to_string(),
            "invalid selector \"@deadbeef\": missing strategy name before '@'"
        );
        assert_eq!(
            Selector::parse("m@abc").unwrap_err().to_string(),
            "invalid hash \"abc\" in selector \"m@abc\": too short (3 hex digits; a hash prefix \
             needs at least 8)"
        );
    }

    #[test]
    fn huge_input_message_is_bounded() {
        let s = format!("m@{}", "z".repeat(100_000));
        let msg = Selector::parse(&s).unwrap_err().to_string();
        assert!(msg.len() < 500, "{}", msg.len());
    }

    #[test]
    fn name_as_hash() {
        assert_eq!(name("deadbeef").name_as_hash(), Some(prefix("deadbeef")));
        assert_eq!(name(&H[..63]).name_as_hash(), Some(prefix(&H[..63])));
        assert_eq!(name(H).name_as_hash(), Some(full()));
        assert_eq!(name("deadbee").name_as_hash(), None);
        assert_eq!(name("momentum").name_as_hash(), None);
        assert_eq!(name("deadbeef-1").name_as_hash(), None);
        assert_eq!(tag("deadbeef", "x").name_as_hash(), None);
        assert_eq!(rev("deadbeef", full()).name_as_hash(), None);
        assert_eq!(Selector::Hash(prefix("deadbeef")).name_as_hash(), None);
        // Via the parser.
        assert_eq!(Selector::parse("12345678").unwrap().name_as_hash(), Some(prefix("12345678")));
    }

    #[test]
    fn accessors() {
        assert_eq!(name("m").strategy(), Some("m"));
        assert_eq!(tag("m", "p").strategy(), Some("m"));
        assert_eq!(rev("m", full()).strategy(), Some("m"));
        assert_eq!(Selector::Hash(full()).strategy(), None);
        assert_eq!(name("m").tag(), Some("latest"));
        assert_eq!(tag("m", "p").tag(), Some("p"));
        assert_eq!(rev("m", full()).tag(), None);
        assert_eq!(Selector::Hash(full()).tag(), None);
        assert_eq!(rev("m", full()).hash_ref(), Some(&full()));
        assert_eq!(Selector::Hash(full()).hash_ref(), Some(&full()));
        assert_eq!(name("m").hash_ref(), None);
        assert_eq!(tag("m", "latest").normalize(), name("m"));
        assert_eq!(tag("m", "prod").normalize(), tag("m", "prod"));
    }

    #[test]
    fn hash_ref_behaviour() {
        let h: RevisionHash = H.parse().unwrap();
        let other = RevisionHash::of(b"other");
        assert!(full().matches(&h));
        assert!(!full().matches(&other));
        assert!(prefix("ba7816bf").matches(&h));
        assert!(prefix(&H[..63]).matches(&h));
        assert!(!prefix("ba7816be").matches(&h));
        // Hand-built invalid prefixes never match everything.
        assert!(!prefix("").matches(&h));
        assert!(!prefix("ba78").matches(&h));
        assert_eq!(full().to_string(), format!("sha256:{H}"));
        assert_eq!(prefix("ba7816bf").to_string(), "sha256:ba7816bf");
        assert_eq!(full().as_full(), Some(&h));
        assert_eq!(prefix("ba7816bf").as_full(), None);
        assert_eq!(HashRef::parse("BA7816BF"), Ok(prefix("ba7816bf")));
        assert_eq!("sha256:ba7816bf".parse::<HashRef>(), Ok(prefix("ba7816bf")));
        assert_eq!(HashRef::parse(H), Ok(full()));
        assert_eq!(HashRef::parse(&format!("sha256:{H}")), Ok(full()));
        assert!(HashRef::parse("ba7816b").is_err());
        assert!(HashRef::parse("md5:ba7816bf").is_err());
        assert!(HashRef::parse("").is_err());
    }

    // ---- property tests ----

    fn strategy_name() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,63}"
            .prop_filter("valid strategy name", |s| !s.contains("..") && !RESERVED_STRATEGY_NAMES.contains(&s.as_str()))
    }

    fn tag_name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9][A-Za-z0-9._-]{0,63}".prop_filter("valid tag", |s| !s.contains(".."))
    }

    /// Hex of `len` digits of `bytes`, each digit upper-cased where `upper` says so.
    fn spell(bytes: [u8; 32], len: usize, upper: &[bool]) -> String {
        hex::encode(bytes)[..len]
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    }

    fn expected_ref(bytes: [u8; 32], len: usize) -> HashRef {
        if len == 64 {
            HashRef::Full(RevisionHash::from_bytes(bytes))
        } else {
            HashRef::Prefix(hex::encode(bytes)[..len].to_owned())
        }
    }

    /// A valid selector string together with what it must parse to.
    fn valid_selector() -> impl Strategy<Value = (String, Selector)> {
        let hash_parts = (any::<[u8; 32]>(), 8usize..=64, prop::collection::vec(any::<bool>(), 1..8));
        prop_oneof![
            strategy_name().prop_map(|s| (s.clone(), Selector::Name { strategy: s })),
            (strategy_name().prop_filter("not sha256", |s| s != "sha256"), tag_name())
                .prop_map(|(s, t)| (format!("{s}:{t}"), Selector::Tag { strategy: s, tag: t })),
            (strategy_name(), hash_parts.clone(), any::<bool>()).prop_map(|(s, (bytes, len, upper), with_algo)| {
                let algo = if with_algo { "sha256:" } else { "" };
                (
                    format!("{s}@{algo}{}", spell(bytes, len, &upper)),
                    Selector::Revision { strategy: s, hash: expected_ref(bytes, len) },
                )
            }),
            hash_parts.clone().prop_map(|(bytes, len, upper)| (
                format!("sha256:{}", spell(bytes, len, &upper)),
                Selector::Hash(expected_ref(bytes, len))
            )),
            hash_parts.prop_map(|(bytes, len, upper)| {
                let s = spell(bytes, len, &upper);
                // Lower-case hex is a valid strategy name; any upper case makes it a hash.
                let expected = if s.bytes().any(|b| b.is_ascii_uppercase()) {
                    Selector::Hash(expected_ref(bytes, len))
                } else {
                    Selector::Name { strategy: s.clone() }
                };
                (s, expected)
            }),
        ]
    }

    /// Strings biased towards selector syntax, to reach the interesting branches.
    fn selectorish() -> impl Strategy<Value = String> {
        prop_oneof![
            ".*",
            "[a-zA-Z0-9:@/\\\\. _-]{0,80}",
            "(sha256:)?[0-9a-fA-F:@]{0,70}",
            "[a-z]{1,8}[:@](sha256:)?[0-9a-fA-Fg]{0,66}",
            "[a-z.]{0,4}[:@]{0,3}[A-Za-z.]{0,4}",
        ]
    }

    fn check_consistency(s: &str) -> Result<(), TestCaseError> {
        match Selector::parse(s) {
            Ok(sel) => {
                let canonical = sel.canonical();
                prop_assert_eq!(Selector::is_canonical_str(s), canonical == s);
                prop_assert!(Selector::is_canonical_str(&canonical), "{:?}", canonical);
                let reparsed = Selector::parse(&canonical);
                prop_assert_eq!(reparsed, Ok(sel.clone().normalize()));
                // Whatever parses has valid parts.
                if let Some(strategy) = sel.strategy() {
                    prop_assert!(validate_strategy_name(strategy).is_ok());
                }
                if let Selector::Tag { tag, .. } = &sel {
                    prop_assert!(validate_tag(tag).is_ok());
                }
                if let Some(HashRef::Prefix(p)) = sel.hash_ref() {
                    prop_assert!(is_canonical_hex(p) && p.len() < HEX_LEN);
                }
            }
            Err(e) => {
                prop_assert!(!Selector::is_canonical_str(s));
                prop_assert!(!e.to_string().is_empty());
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_parse_never_panics(s in selectorish()) {
            let _ = Selector::parse(&s);
            let _ = Selector::is_canonical_str(&s);
            let _ = HashRef::parse(&s);
        }

        #[test]
        fn prop_canonical_round_trips(s in selectorish()) {
            check_consistency(&s)?;
        }

        #[test]
        fn prop_valid_selectors_parse((s, expected) in valid_selector()) {
            prop_assert_eq!(Selector::parse(&s), Ok(expected.clone()));
            check_consistency(&s)?;
            prop_assert_eq!(Selector::parse(&expected.canonical()), Ok(expected.normalize()));
        }

        #[test]
        fn prop_hash_refs_match_their_hash(
            bytes in any::<[u8; 32]>(),
            other in any::<[u8; 32]>(),
            len in 8usize..=64,
        ) {
            let h = RevisionHash::from_bytes(bytes);
            let r = expected_ref(bytes, len);
            prop_assert!(r.matches(&h));
            let o = RevisionHash::from_bytes(other);
            prop_assert_eq!(r.matches(&o), o.to_hex().starts_with(&h.to_hex()[..len]));
        }

        #[test]
        fn prop_forbidden_in_names_and_tags_rejected(
            s in strategy_name(),
            t in tag_name(),
            bad in prop::sample::select(vec![":", "@", "/", "\\", ".."]),
            at in any::<usize>(),
        ) {
            let at_s = at % (s.len() + 1);
            let bad_name = format!("{}{bad}{}", &s[..at_s], &s[at_s..]);
            prop_assert!(validate_strategy_name(&bad_name).is_err());
            let at_t = at % (t.len() + 1);
            let bad_tag = format!("{}{bad}{}", &t[..at_t], &t[at_t..]);
            prop_assert!(validate_tag(&bad_tag).is_err());
            // In a selector they never come back as a name or tag.
            if let Ok(sel) = Selector::parse(&format!("{s}:{bad_tag}")) {
                let is_bad_tag = matches!(&sel, Selector::Tag { tag, .. } if *tag == bad_tag);
                prop_assert!(!is_bad_tag);
            }
            if let Ok(sel) = Selector::parse(&format!("{bad_name}:{t}")) {
                prop_assert_ne!(sel.strategy(), Some(bad_name.as_str()));
            }
            if let Ok(sel) = Selector::parse(&bad_name) {
                prop_assert_ne!(sel.strategy(), Some(bad_name.as_str()));
            }
        }
    }
}
