//! JSON Schema helpers for wire types whose Rust type is not what goes on
//! the wire (timestamps written through `time::serde::rfc3339`).
//!
//! The API types derive `schemars::JsonSchema`, so the daemon's OpenAPI
//! document describes bodies with schemas taken from the very types it
//! serialises.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// An RFC 3339 timestamp, as `time::serde::rfc3339` writes an
/// `OffsetDateTime`. Used through `#[schemars(with = "…")]`.
pub struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}
