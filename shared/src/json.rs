//! Strict JSON decoding: a document that repeats a key in any object is
//! refused, naming the key and where it is.
//!
//! `serde_json` keeps the last value of a repeated key in a map (a
//! `config` object, say), so `{"dry_run": true, "dry_run": false}` would be
//! read as `false` while a reviewer of the request sees `true` first. The API
//! decodes every request body (and every WebSocket message) through
//! [`from_slice`], so no body means two things.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Decodes `bytes` as `T` after checking that no object in it repeats a key.
/// The error of a repeated key reads `duplicate key "<path>"`, the path
/// dotted from the document's root (`strategy.config.size`, `hashes[2].x`).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    Unique { path: "" }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    serde_json::from_slice(bytes)
}

/// [`from_slice`] for text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, serde_json::Error> {
    from_slice(text.as_bytes())
}

/// Walks one value, refusing repeated keys in every object it contains.
struct Unique<'p> {
    /// Where the value is (empty at the root).
    path: &'p str,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let path = format!("{}[{index}]", self.path);
            if seq.next_element_seed(Unique { path: &path })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                return Err(de::Error::custom(format_args!("duplicate key \"{path}\"")));
            }
            map.next_value_seed(Unique { path: &path })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_repeated_key_is_refused_at_any_depth_naming_it() {
        let cases = [
            (r#"{"id": "a", "id": "b"}"#, "duplicate key \"id\""),
            (r#"{"strategy": {"config": {"size": 1, "size": 2}}}"#, "duplicate key \"strategy.config.size\""),
            (r#"{"hashes": [{"x": 1}, {"x": 1, "x": 2}]}"#, "duplicate key \"hashes[1].x\""),
        ];
        for (text, expected) in cases {
            let error = from_str::<Value>(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text}: {error}");
        }
    }

    #[test]
    fn distinct_keys_decode_as_serde_json_does() {
        let text = r#"{"a": {"x": 1, "y": [1, 2.5, "s", null, true]}, "b": {"x": 2}, "c": []}"#;
        assert_eq!(
            from_str::<Value>(text).unwrap(),
            json!({"a": {"x": 1, "y": [1, 2.5, "s", null, true]}, "b": {"x": 2}, "c": []})
        );
        // Syntax errors and trailing garbage are still serde_json's errors.
        assert!(from_str::<Value>(r#"{"a": 1"#).is_err());
        assert!(from_str::<Value>(r#"{"a": 1} x"#).is_err());
    }
}
