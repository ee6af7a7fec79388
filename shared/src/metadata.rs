//! Strategy module metadata and upload diagnostics (SPEC §1.2).
//!
//! [`ModuleMetadata`] is what the daemon extracts from a module's
//! `module.exports.metadata` after validating it; [`Diagnostic`] is one entry
//! of the `diagnostics` array of a 422 `strategy_validation_failed` answer.
//! Both are API output types and serialise as camelCase JSON.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the boolean config field added to every schema that lacks it.
///
/// Its default is `true`: an instance trades for real only when its config
/// explicitly sets `dry_run` to `false`.
pub const DRY_RUN_FIELD: &str = "dry_run";

/// The most config fields a module may declare (SPEC §8: metadata is
/// bounded). The implicit [`DRY_RUN_FIELD`] is not counted.
pub const MAX_CONFIG_FIELDS: usize = 256;

/// Validated metadata of one strategy revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleMetadata {
    /// Strategy name (`metadata.name`), a valid strategy name.
    pub name: String,
    /// Human-readable name (`metadata.displayName`), 1–80 characters.
    pub display_name: String,
    /// Optional free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tag the module proposes for itself (`metadata.tag`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Free-form version string (`metadata.version`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Config schema, in declaration order; always contains [`DRY_RUN_FIELD`].
    #[serde(default)]
    pub config: Vec<ConfigField>,
    /// Event kinds the strategy subscribes to (at least one, no duplicates).
    pub events: Vec<EventKind>,
}

/// One field of a strategy's config schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigField {
    /// Field name, unique within the schema.
    pub name: String,
    /// Value type of the field.
    #[serde(rename = "type")]
    pub kind: ConfigType,
    /// Default value, already checked against [`ConfigField::kind`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Whether an instance config must set this field.
    #[serde(default)]
    pub required: bool,
    /// Optional description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The largest integer an `int` config field accepts, `2^53 - 1`
/// (JavaScript's `Number.MAX_SAFE_INTEGER`); its negation is the smallest.
/// Beyond it a double cannot hold every integer, so the strategy would see
/// another number than the one configured.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Type of a config field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    /// A JSON boolean.
    Bool,
    /// A JSON number with no fractional part.
    Int,
    /// Any JSON number.
    Float,
    /// Any JSON number (synonym of [`ConfigType::Float`]).
    Number,
    /// A JSON string.
    String,
    /// A duration: a string such as `"150ms"`, `"5s"`, `"2m"`, `"1h"`, or a
    /// non-negative number of milliseconds.
    Duration,
}

impl ConfigType {
    /// Every config type, in declaration order.
    pub const ALL: [ConfigType; 6] = [
        ConfigType::Bool,
        ConfigType::Int,
        ConfigType::Float,
        ConfigType::Number,
        ConfigType::String,
        ConfigType::Duration,
    ];

    /// The name used in JS modules and JSON (`"bool"`, `"int"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::Bool => "bool",
            ConfigType::Int => "int",
            ConfigType::Float => "float",
            ConfigType::Number => "number",
            ConfigType::String => "string",
            ConfigType::Duration => "duration",
        }
    }

    /// Parses the name used in JS modules and JSON; `None` if unknown.
    pub fn parse(name: &str) -> Option<ConfigType> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether `value` is a valid value (or default) for a field of this
    /// type: `bool` a boolean, `int` a number without fractional part whose
    /// magnitude is at most [`MAX_SAFE_INTEGER`] (so that JavaScript, which
    /// holds numbers as doubles, reads exactly the value given),
    /// `float`/`number` any number, `string` a string, `duration` a string
    /// accepted by [`parse_duration`] or a non-negative number of
    /// milliseconds.
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (self, value) {
            (ConfigType::Bool, Value::Bool(_)) => true,
            (ConfigType::Int, Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i.unsigned_abs() <= MAX_SAFE_INTEGER as u64,
                (None, Some(f)) => f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER as f64,
                (None, None) => false,
            },
            (ConfigType::Float | ConfigType::Number, Value::Number(_)) => true,
            (ConfigType::String, Value::String(_)) => true,
            (ConfigType::Duration, Value::Number(n)) => n.as_f64().is_some_and(|f| f >= 0.0),
            (ConfigType::Duration, Value::String(s)) => parse_duration(s).is_some(),
            _ => false,
        }
    }
}

/// Parses a duration string: one or more `<number><unit>` parts with no
/// spaces, where the number is decimal digits with an optional fraction and
/// the unit is `ms`, `s`, `m` or `h` (`"150ms"`, `"5s"`, `"1.5m"`, `"1h30m"`).
///
/// Returns `None` for anything else, including an empty string, a bare
/// number, a sign, or a total too large for [`std::time::Duration`].
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut total_ms = 0.0_f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
        let digits_ok = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits_ok(whole) || !digits_ok(fraction) {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = tail.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total_ms += value * unit_ms;
        rest = tail;
    }
    std::time::Duration::try_from_secs_f64(total_ms / 1_000.0).ok()
}

impl std::fmt::Display for ConfigType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Kind of market or account event a strategy can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    /// A public trade.
    Trade,
    /// A ticker update (last, bid, ask, 24h volume).
    Ticker,
    /// A full order-book snapshot.
    BookSnapshot,
    /// An execution report for one of the instance's own orders.
    ExecReport,
    /// A candle (kline) summary.
    KlineSummary,
    /// An instrument definition change.
    InstrumentUpdate,
    /// An account balance change.
    BalanceUpdate,
    /// A risk-control notification.
    RiskControl,
    /// A venue-specific extension event.
    Extension,
}

impl EventKind {
    /// Every event kind, in declaration order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Trade,
        EventKind::Ticker,
        EventKind::BookSnapshot,
        EventKind::ExecReport,
        EventKind::KlineSummary,
        EventKind::InstrumentUpdate,
        EventKind::BalanceUpdate,
        EventKind::RiskControl,
        EventKind::Extension,
    ];

    /// The name used in JS modules and JSON (`"Trade"`, `"ExecReport"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Trade => "Trade",
            EventKind::Ticker => "Ticker",
            EventKind::BookSnapshot => "BookSnapshot",
            EventKind::ExecReport => "ExecReport",
            EventKind::KlineSummary => "KlineSummary",
            EventKind::InstrumentUpdate => "InstrumentUpdate",
            EventKind::BalanceUpdate => "BalanceUpdate",
            EventKind::RiskControl => "RiskControl",
            EventKind::Extension => "Extension",
        }
    }

    /// Parses the name used in JS modules and JSON; `None` if unknown.
    pub fn parse(name: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found while checking an uploaded module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// Which step found the problem.
    pub stage: DiagnosticStage,
    /// Human-readable description of the problem.
    pub message: String,
    /// 1-based line in the module source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column in the module source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// Extra help; for [`DiagnosticStage::Validation`] the JSON path of the
    /// offending value (e.g. `metadata.events[0]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with only a stage and a message.
    pub fn new(stage: DiagnosticStage, message: impl Into<String>) -> Self {
        Diagnostic { stage, message: message.into(), line: None, column: None, hint: None }
    }

    /// A [`DiagnosticStage::Validation`] diagnostic whose hint is `path`.
    pub fn validation(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { hint: Some(path.into()), ..Diagnostic::new(DiagnosticStage::Validation, message) }
    }
}

/// Step of module checking that produced a [`Diagnostic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiagnosticStage {
    /// The source could not be compiled (bad encoding, syntax error).
    Compile,
    /// Evaluating the module's top level failed (exception, CPU budget,
    /// memory limit).
    Execute,
    /// `module.exports` does not follow the module contract.
    Validation,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_serialises_camel_case_and_skips_none() {
        let meta = ModuleMetadata {
            name: "momentum".into(),
            display_name: "Momentum".into(),
            description: None,
            tag: Some("v1".into()),
            version: None,
            config: vec![ConfigField {
                name: DRY_RUN_FIELD.into(),
                kind: ConfigType::Bool,
                default: Some(json!(true)),
                required: false,
                description: None,
            }],
            events: vec![EventKind::Trade, EventKind::BookSnapshot],
        };
        let value = serde_json::to_value(&meta).unwrap();
        assert_eq!(
            value,
            json!({
                "name": "momentum",
                "displayName": "Momentum",
                "tag": "v1",
                "config": [{"name": "dry_run", "type": "bool", "default": true, "required": false}],
                "events": ["Trade", "BookSnapshot"],
            })
        );
        let back: ModuleMetadata = serde_json::from_value(value).unwrap();
        assert_eq!(back, meta);
    }

    #[test]
    fn enums_use_contract_names() {
        for kind in ConfigType::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(ConfigType::parse(kind.as_str()), Some(kind));
        }
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ConfigType::parse("Bool"), None);
        assert_eq!(EventKind::parse("trade"), None);
    }

    #[test]
    fn durations_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("150ms"), Some(Duration::from_millis(150)));
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0ms"), Some(Duration::ZERO));
        for bad in ["", "150", "ms", "-5s", "5 s", "5sec", "1.s", ".5s", "5s ", "1e3ms", "5d"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn config_types_accept_matching_values() {
        use ConfigType::*;
        let cases = [
            (Bool, json!(true), true),
            (Bool, json!(1), false),
            (Int, json!(20), true),
            (Int, json!(-3), true),
            (Int, json!(2.0), true),
            (Int, json!(2.5), false),
            (Int, json!(1.5), false),
            (Int, json!("2"), false),
            (Int, json!(9_007_199_254_740_991_i64), true),
            (Int, json!(-9_007_199_254_740_991_i64), true),
            (Int, json!(9_007_199_254_740_992_i64), false),
            (Int, json!(-9_007_199_254_740_992_i64), false),
            (Int, json!(i64::MAX), false),
            (Int, json!(u64::MAX), false),
            (Int, json!(1e300), false),
            (Int, json!(9_007_199_254_740_992.0), false),
            (Float, json!(2.5), true),
            (Number, json!(7), true),
            (Number, json!("7"), false),
            (String, json!("x"), true),
            (String, json!(1), false),
            (Duration, json!("150ms"), true),
            (Duration, json!(150), true),
            (Duration, json!(1.5), true),
            (Duration, json!(-1), false),
            (Duration, json!("soon"), false),
            (Duration, json!(true), false),
        ];
        for (kind, value, ok) in cases {
            assert_eq!(kind.accepts(&value), ok, "{kind} {value}");
        }
    }

    #[test]
    fn diagnostic_serialises_lowercase_stage_and_skips_none() {
        let diag = Diagnostic::validation("metadata.events[0]", "unknown event");
        assert_eq!(
            serde_json::to_value(&diag).unwrap(),
            json!({"stage": "validation", "message": "unknown event", "hint": "metadata.events[0]"})
        );
        let diag = Diagnostic {
            line: Some(3),
            column: Some(7),
            ..Diagnostic::new(DiagnosticStage::Compile, "unexpected token")
        };
        assert_eq!(
            serde_json::to_value(&diag).unwrap(),
            json!({"stage": "compile", "message": "unexpected token", "line": 3, "column": 7})
        );
    }
}
