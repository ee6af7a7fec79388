//! Validation of strategy names, tags and instance ids (SPEC §1.1).
//!
//! - strategy names: `[a-z0-9][a-z0-9._-]{0,63}`, no `..`, not one of
//!   [`RESERVED_STRATEGY_NAMES`];
//! - tags: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, no `..`;
//! - instance ids: `[A-Za-z0-9._-]{1,128}`, not `.`, no `..`.
//!
//! None of them can ever contain `:`, `@`, `/` or `\`, so they are safe both in selectors and as
//! path segments. The `validate_*` functions explain what is wrong; the `is_valid_*` functions
//! answer the same question without allocating.

use std::fmt;

/// The tag every strategy with revisions has; a bare `name` selector follows it.
pub const LATEST_TAG: &str = "latest";

/// Strategy names that collide with the routes `/strategies/modules`, `/strategies/registry`
/// and `/strategies/refresh`, and are therefore rejected.
pub const RESERVED_STRATEGY_NAMES: &[&str] = &["modules", "registry", "refresh"];

/// Maximum length of a strategy name or a tag.
pub const MAX_NAME_LEN: usize = 64;

/// Maximum length of an instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 128;

/// What kind of identifier is being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A strategy name.
    StrategyName,
    /// A tag (alias of a revision).
    Tag,
    /// An instance id.
    InstanceId,
}

impl NameKind {
    /// The rule, as a sentence fragment for error messages.
    pub const fn rule(self) -> &'static str {
        match self {
            NameKind::StrategyName => "strategy names must match [a-z0-9][a-z0-9._-]{0,63} and must not contain \"..\"",
            NameKind::Tag => "tags must match [A-Za-z0-9][A-Za-z0-9._-]{0,63} and must not contain \"..\"",
            NameKind::InstanceId => {
                "instance ids must match [A-Za-z0-9._-]{1,128}, must not be \".\" or \"..\" and \
                 must not contain \"..\""
            }
        }
    }

    /// The maximum length in characters.
    pub const fn max_len(self) -> usize {
        match self {
            NameKind::StrategyName | NameKind::Tag => MAX_NAME_LEN,
            NameKind::InstanceId => MAX_INSTANCE_ID_LEN,
        }
    }

    const fn allows(self, first: bool, c: u8) -> bool {
        match self {
            NameKind::StrategyName => {
                c.is_ascii_lowercase() || c.is_ascii_digit() || (!first && matches!(c, b'.' | b'_' | b'-'))
            }
            NameKind::Tag => c.is_ascii_alphanumeric() || (!first && matches!(c, b'.' | b'_' | b'-')),
            NameKind::InstanceId => c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'),
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::StrategyName => "strategy name",
            NameKind::Tag => "tag",
            NameKind::InstanceId => "instance id",
        })
    }
}

/// Why a strategy name, tag or instance id is invalid.
///
/// Displays as `invalid <kind> "<value>": <reason>; <rule>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The value is empty.
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    Empty {
        /// What was being validated.
        kind: NameKind,
    },
    /// The value contains a character the rule does not allow (at that place).
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    InvalidChar {
        /// What was being validated.
        kind: NameKind,
        /// The offending value.
        value: String,
        /// The first offending character.
        ch: char,
        /// Its 1-based character position.
        position: usize,
    },
    /// The value is longer than the rule allows.
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    TooLong {
        /// What was being validated.
        kind: NameKind,
        /// The offending value.
        value: String,
        /// Its length in characters.
        len: usize,
    },
    /// The value contains `..`.
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    DotDot {
        /// What was being validated.
        kind: NameKind,
        /// The offending value.
        value: String,
    },
    /// The value is exactly `.` (instance ids only; other kinds cannot start with `.`).
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    Dot {
        /// What was being validated.
        kind: NameKind,
    },
    /// The strategy name is one of [`RESERVED_STRATEGY_NAMES`].
    #[error("invalid {} {}: {}", self.kind(), Shown(self.value()), self.reason())]
    Reserved {
        /// The offending strategy name.
        value: String,
    },
}

impl NameError {
    /// What was being validated.
    pub fn kind(&self) -> NameKind {
        match self {
            NameError::Empty { kind }
            | NameError::InvalidChar { kind, .. }
            | NameError::TooLong { kind, .. }
            | NameError::DotDot { kind, .. }
            | NameError::Dot { kind } => *kind,
            NameError::Reserved { .. } => NameKind::StrategyName,
        }
    }

    /// The offending value.
    pub fn value(&self) -> &str {
        match self {
            NameError::Empty { .. } => "",
            NameError::Dot { .. } => ".",
            NameError::InvalidChar { value, .. }
            | NameError::TooLong { value, .. }
            | NameError::DotDot { value, .. }
            | NameError::Reserved { value } => value,
        }
    }

    /// What is wrong and the rule, without the `invalid <kind> "<value>": ` preamble
    /// (used to phrase selector errors).
    pub fn reason(&self) -> impl fmt::Display + '_ {
        Reason(self)
    }
}

struct Reason<'a>(&'a NameError);

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.0.kind();
        match self.0 {
            NameError::Empty { .. } => f.write_str("must not be empty")?,
            NameError::InvalidChar { ch, position, .. } => {
                write!(f, "character {ch:?} at position {position} is not allowed")?;
                let separator = matches!(ch, '.' | '_' | '-');
                if *position == 1 && kind != NameKind::InstanceId && separator {
                    f.write_str(" as the first character")?;
                }
                if kind == NameKind::StrategyName && ch.is_ascii_uppercase() {
                    f.write_str(" (strategy names are lower case)")?;
                }
            }
            NameError::TooLong { len, .. } => {
                let max = kind.max_len();
                write!(f, "too long ({len} characters, at most {max})")?;
            }
            NameError::DotDot { .. } => f.write_str("must not contain \"..\"")?,
            NameError::Dot { .. } => f.write_str("must not be \".\"")?,
            NameError::Reserved { value } => {
                return write!(
                    f,
                    "{value:?} is reserved because it collides with the route /strategies/{value} \
                     (reserved names: modules, registry, refresh)"
                );
            }
        }
        write!(f, "; {}", kind.rule())
    }
}

/// A non-allocating description of the first rule violation.
#[derive(Clone, Copy)]
enum Violation {
    Empty,
    InvalidChar { ch: char, position: usize },
    TooLong { len: usize },
    DotDot,
    Dot,
    Reserved,
}

fn check(kind: NameKind, s: &str) -> Result<(), Violation> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(Violation::Empty);
    }
    for (i, &c) in b.iter().enumerate() {
        if !kind.allows(i == 0, c) {
            // Every earlier byte is an allowed ASCII character, so `i` is a char boundary
            // and the character's 1-based position is `i + 1`.
            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
            return Err(Violation::InvalidChar { ch, position: i + 1 });
        }
    }
    // All characters are ASCII from here on: bytes == characters.
    if b.len() > kind.max_len() {
        return Err(Violation::TooLong { len: b.len() });
    }
    if b.windows(2).any(|w| w == b"..") {
        return Err(Violation::DotDot);
    }
    if b == b"." {
        return Err(Violation::Dot);
    }
    if kind == NameKind::StrategyName && RESERVED_STRATEGY_NAMES.contains(&s) {
        return Err(Violation::Reserved);
    }
    Ok(())
}

/// Validates `s` as a `kind`, explaining the first violation.
pub fn validate(kind: NameKind, s: &str) -> Result<(), NameError> {
    check(kind, s).map_err(|v| match v {
        Violation::Empty => NameError::Empty { kind },
        Violation::InvalidChar { ch, position } => NameError::InvalidChar { kind, value: s.to_owned(), ch, position },
        Violation::TooLong { len } => NameError::TooLong { kind, value: s.to_owned(), len },
        Violation::DotDot => NameError::DotDot { kind, value: s.to_owned() },
        Violation::Dot => NameError::Dot { kind },
        Violation::Reserved => NameError::Reserved { value: s.to_owned() },
    })
}

/// Validates a strategy name: `[a-z0-9][a-z0-9._-]{0,63}`, no `..`, not reserved.
pub fn validate_strategy_name(s: &str) -> Result<(), NameError> {
    validate(NameKind::StrategyName, s)
}

/// Validates a tag: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, no `..`.
pub fn validate_tag(s: &str) -> Result<(), NameError> {
    validate(NameKind::Tag, s)
}

/// Validates an instance id: `[A-Za-z0-9._-]{1,128}`, not `.` or `..`, no `..`.
pub fn validate_instance_id(s: &str) -> Result<(), NameError> {
    validate(NameKind::InstanceId, s)
}

/// Whether `s` is a valid strategy name (see [`validate_strategy_name`]); does not allocate.
pub fn is_valid_strategy_name(s: &str) -> bool {
    check(NameKind::StrategyName, s).is_ok()
}

/// Whether `s` is a valid tag (see [`validate_tag`]); does not allocate.
pub fn is_valid_tag(s: &str) -> bool {
    check(NameKind::Tag, s).is_ok()
}

/// Whether `s` is a valid instance id (see [`validate_instance_id`]); does not allocate.
pub fn is_valid_instance_id(s: &str) -> bool {
    check(NameKind::InstanceId, s).is_ok()
}

/// Displays a user-supplied string quoted and escaped, truncated if very long, so that error
/// messages stay readable whatever was sent.
pub(crate) struct Shown<'a>(pub(crate) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX_CHARS: usize = 100;
        const KEEP_CHARS: usize = 80;
        let s = self.0;
        match s.char_indices().nth(MAX_CHARS) {
            None => write!(f, "{s:?}"),
            Some(_) => {
                let cut = s.char_indices().nth(KEEP_CHARS).map_or(s.len(), |(i, _)| i);
                let head = &s[..cut];
                let head = format!("{head:?}");
                // `head` ends with the closing quote; insert the ellipsis before it.
                write!(f, "{}…\" ({} bytes)", &head[..head.len() - 1], s.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strategy_names_accepted() {
        for ok in [
            "a",
            "0",
            "momentum",
            "mean-reversion_2.1",
            "a.b.c",
            "a-",
            "a.",
            "a_",
            "9lives",
            "deadbeef",
            "sha256",
            "latest",
            "module",
            "modules2",
            "registry.v2",
            &"a".repeat(64),
            &"0123456789abcdef".repeat(4),
        ] {
            assert_eq!(validate_strategy_name(ok), Ok(()), "{ok:?}");
            assert!(is_valid_strategy_name(ok), "{ok:?}");
        }
    }

    #[test]
    fn strategy_names_rejected() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("Momentum", "character 'M' at position 1 is not allowed (strategy names are lower case)"),
            ("momentUm", "character 'U' at position 7"),
            (".a", "character '.' at position 1 is not allowed as the first character"),
            ("-a", "as the first character"),
            ("_a", "as the first character"),
            ("a b", "character ' ' at position 2"),
            ("a:b", "character ':' at position 2"),
            ("a@b", "character '@' at position 2"),
            ("a/b", "character '/' at position 2"),
            ("a\\b", "character '\\\\' at position 2"),
            ("a\nb", "character '\\n' at position 2"),
            ("aé", "character 'é' at position 2"),
            ("a..b", "must not contain \"..\""),
            ("a..", "must not contain \"..\""),
            ("modules", "reserved because it collides with the route /strategies/modules"),
            ("registry", "collides with the route /strategies/registry"),
            ("refresh", "collides with the route /strategies/refresh"),
        ];
        for (bad, fragment) in cases {
            let err = validate_strategy_name(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("invalid strategy name {bad:?}: ")), "{msg}");
            assert!(msg.contains(fragment), "{bad:?}: {msg}");
            assert!(!is_valid_strategy_name(bad), "{bad:?}");
            assert_eq!(err.value(), *bad);
            assert_eq!(err.kind(), NameKind::StrategyName);
        }
        let long = "a".repeat(65);
        let err = validate_strategy_name(&long).unwrap_err();
        assert_eq!(err, NameError::TooLong { kind: NameKind::StrategyName, value: long.clone(), len: 65 });
        assert!(err.to_string().contains("too long (65 characters, at most 64)"));
        assert!(!is_valid_strategy_name(&long));
    }

    #[test]
    fn strategy_name_messages_exact() {
        assert_eq!(
            validate_strategy_name("a/b").unwrap_err().to_string(),
            "invalid strategy name \"a/b\": character '/' at position 2 is not allowed; strategy \
             names must match [a-z0-9][a-z0-9._-]{0,63} and must not contain \"..\""
        );
        assert_eq!(
            validate_strategy_name("refresh").unwrap_err().to_string(),
            "invalid strategy name \"refresh\": \"refresh\" is reserved because it collides with \
             the route /strategies/refresh (reserved names: modules, registry, refresh)"
        );
        assert_eq!(
            validate_strategy_name("").unwrap_err().to_string(),
            "invalid strategy name \"\": must not be empty; strategy names must match \
             [a-z0-9][a-z0-9._-]{0,63} and must not contain \"..\""
        );
    }

    #[test]
    fn reserved_names_listed() {
        assert_eq!(RESERVED_STRATEGY_NAMES, &["modules", "registry", "refresh"]);
        for r in RESERVED_STRATEGY_NAMES {
            assert!(matches!(validate_strategy_name(r), Err(NameError::Reserved { .. })));
            // Reserved only as strategy names.
            assert_eq!(validate_tag(r), Ok(()));
            assert_eq!(validate_instance_id(r), Ok(()));
        }
    }

    #[test]
    fn tags_accepted() {
        for ok in ["latest", "v1.2.0", "PROD", "Prod-2_b", "1", "V", "a.b", "x-", &"Z".repeat(64)] {
            assert_eq!(validate_tag(ok), Ok(()), "{ok:?}");
            assert!(is_valid_tag(ok));
        }
        assert_eq!(LATEST_TAG, "latest");
    }

    #[test]
    fn tags_rejected() {
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            (".v1", "as the first character"),
            ("-v1", "as the first character"),
            ("_v1", "as the first character"),
            ("v1:2", "character ':' at position 3"),
            ("v1@2", "character '@'"),
            ("a/b", "character '/' at position 2 is not allowed; tags must match"),
            ("a\\b", "character '\\\\'"),
            ("v1..2", "must not contain \"..\""),
            ("v 1", "character ' '"),
            ("v1\t", "character '\\t'"),
            ("ü", "character 'ü' at position 1"),
        ];
        for (bad, fragment) in cases {
            let err = validate_tag(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("invalid tag {bad:?}: ")), "{msg}");
            assert!(msg.contains(fragment), "{bad:?}: {msg}");
            assert!(!is_valid_tag(bad));
        }
        assert!(matches!(validate_tag(&"a".repeat(65)), Err(NameError::TooLong { len: 65, .. })));
    }

    #[test]
    fn instance_ids() {
        for ok in ["a", "A", ".a", "a.", "-", "_", "a.b", "inst-01_X", "Momentum.Prod-1"] {
            assert_eq!(validate_instance_id(ok), Ok(()), "{ok:?}");
            assert!(is_valid_instance_id(ok));
        }
        assert_eq!(validate_instance_id(&"x".repeat(128)), Ok(()));
        let cases: &[(&str, &str)] = &[
            ("", "must not be empty"),
            (".", "must not be \".\""),
            ("..", "must not contain \"..\""),
            ("a..b", "must not contain \"..\""),
            ("a/b", "character '/'"),
            ("a\\b", "character '\\\\'"),
            ("a:b", "character ':'"),
            ("a@b", "character '@'"),
            ("a b", "character ' '"),
        ];
        for (bad, fragment) in cases {
            let err = validate_instance_id(bad).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("invalid instance id {bad:?}: ")), "{msg}");
            assert!(msg.contains(fragment), "{bad:?}: {msg}");
            assert!(msg.contains("instance ids must match"), "{msg}");
            assert!(!is_valid_instance_id(bad));
        }
        assert!(matches!(validate_instance_id(&"x".repeat(129)), Err(NameError::TooLong { len: 129, .. })));
    }

    #[test]
    fn long_values_are_truncated_in_messages() {
        let long = "A".repeat(10_000);
        let msg = validate_tag(&format!("{long}/")).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("…\" (10001 bytes)"), "{msg}");
        assert_eq!(Shown("abc").to_string(), "\"abc\"");
        assert_eq!(Shown("a\"b").to_string(), "\"a\\\"b\"");
        let exactly = "é".repeat(100);
        assert_eq!(Shown(&exactly).to_string(), format!("{exactly:?}"));
    }

    fn forbidden() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![":", "@", "/", "\\", ".."])
    }

    fn insert_at(base: &str, at: usize, what: &str) -> String {
        let at = at % (base.len() + 1);
        format!("{}{}{}", &base[..at], what, &base[at..])
    }

    proptest! {
        #[test]
        fn prop_never_panics(s in ".*") {
            for kind in [NameKind::StrategyName, NameKind::Tag, NameKind::InstanceId] {
                let r = validate(kind, &s);
                prop_assert_eq!(r.is_ok(), check(kind, &s).is_ok());
                if let Err(e) = r {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }

        #[test]
        fn prop_regex_names_accepted(s in "[a-z0-9][a-z0-9._-]{0,63}") {
            let expected = !s.contains("..") && !RESERVED_STRATEGY_NAMES.contains(&s.as_str());
            prop_assert_eq!(validate_strategy_name(&s).is_ok(), expected);
            // Every strategy name is also a valid tag and instance id (unless it has "..").
            prop_assert_eq!(validate_tag(&s).is_ok(), !s.contains(".."));
            prop_assert_eq!(validate_instance_id(&s).is_ok(), !s.contains(".."));
        }

        #[test]
        fn prop_regex_tags_accepted(s in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
            prop_assert_eq!(validate_tag(&s).is_ok(), !s.contains(".."));
        }

        #[test]
        fn prop_regex_instance_ids_accepted(s in "[A-Za-z0-9._-]{1,128}") {
            prop_assert_eq!(validate_instance_id(&s).is_ok(), !s.contains("..") && s != ".");
        }

        #[test]
        fn prop_forbidden_rejected(
            name in "[a-z0-9][a-z0-9._-]{0,62}",
            tag in "[A-Za-z0-9][A-Za-z0-9._-]{0,62}",
            id in "[A-Za-z0-9._-]{1,126}",
            bad in forbidden(),
            at in any::<usize>(),
        ) {
            let n = insert_at(&name, at, bad);
            prop_assert!(validate_strategy_name(&n).is_err(), "{:?}", n);
            prop_assert!(!is_valid_strategy_name(&n));
            let t = insert_at(&tag, at, bad);
            prop_assert!(validate_tag(&t).is_err(), "{:?}", t);
            prop_assert!(!is_valid_tag(&t));
            let i = insert_at(&id, at, bad);
            prop_assert!(validate_instance_id(&i).is_err(), "{:?}", i);
            prop_assert!(!is_valid_instance_id(&i));
        }
    }
}
