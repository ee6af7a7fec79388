//! Instance config validation against a revision's config schema
//! (SPEC §1.2: "Instance config is validated against that schema").

use serde_json::{Map, Value};
use strata_shared::metadata::{ConfigField, ConfigType, DRY_RUN_FIELD, ModuleMetadata};

/// Checks an instance's `config` against `metadata.config` and returns it
/// completed with defaults.
///
/// - `config` must be a JSON object; `null` stands for `{}`.
/// - A key the schema does not declare is an error.
/// - A value must be accepted by its field's [`ConfigType::accepts`]. A
///   `null` value counts as "not set".
/// - A field that is not set takes its default; a required field with no
///   default that is not set is an error; an optional field with no default
///   stays absent.
/// - `dry_run` (a bool, default `true`) is part of every schema, declared or
///   not.
///
/// The result lists the fields in schema order. On failure, every problem is
/// reported, one message each, naming the field and the expected type.
pub fn validate_config(metadata: &ModuleMetadata, config: &Value) -> Result<Map<String, Value>, Vec<String>> {
    let empty = Map::new();
    let given = match config {
        Value::Null => &empty,
        Value::Object(map) => map,
        other => return Err(vec![format!("config must be a JSON object, got {}", crate::js::type_of(other))]),
    };

    let implicit_dry_run;
    let mut fields: Vec<&ConfigField> = metadata.config.iter().collect();
    if !fields.iter().any(|field| field.name == DRY_RUN_FIELD) {
        implicit_dry_run = dry_run_field();
        fields.push(&implicit_dry_run);
    }

    let mut errors = Vec::new();
    let declared: std::collections::HashSet<&str> = fields.iter().map(|field| field.name.as_str()).collect();
    for key in given.keys() {
        if !declared.contains(key.as_str()) {
            let known: Vec<&str> = fields.iter().map(|field| field.name.as_str()).collect();
            errors.push(format!("unknown config field {key:?} (the schema declares: {})", known.join(", ")));
        }
    }

    let mut out = Map::new();
    for field in fields {
        match given.get(&field.name).filter(|value| !value.is_null()) {
            Some(value) if field.kind.accepts(value) => {
                out.insert(field.name.clone(), value.clone());
            }
            Some(value) => errors.push(format!(
                "config field {:?} must be of type {} ({}), got {}",
                field.name,
                field.kind,
                type_description(field.kind),
                shown(value)
            )),
            None => match &field.default {
                Some(default) => {
                    out.insert(field.name.clone(), default.clone());
                }
                None if field.required => errors.push(format!(
                    "missing required config field {:?} of type {} ({})",
                    field.name,
                    field.kind,
                    type_description(field.kind)
                )),
                None => {}
            },
        }
    }

    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// The `dry_run` field every schema has (default `true`).
fn dry_run_field() -> ConfigField {
    ConfigField {
        name: DRY_RUN_FIELD.to_owned(),
        kind: ConfigType::Bool,
        default: Some(Value::Bool(true)),
        required: false,
        description: None,
    }
}

/// What values a config type accepts, for error messages.
fn type_description(kind: ConfigType) -> &'static str {
    match kind {
        ConfigType::Bool => "true or false",
        ConfigType::Int => "a whole number from -9007199254740991 to 9007199254740991, JavaScript's safe integers",
        ConfigType::Float | ConfigType::Number => "a number",
        ConfigType::String => "a string",
        ConfigType::Duration => "a duration such as \"150ms\", \"5s\" or \"1m30s\", or a number of milliseconds",
    }
}

/// A value as shown in an error message: short JSON, with its type.
fn shown(value: &Value) -> String {
    let mut json = value.to_string();
    if json.len() > 60 {
        let mut end = 57;
        while !json.is_char_boundary(end) {
            end -= 1;
        }
        json.truncate(end);
        json.push('…');
    }
    format!("{} {json}", crate::js::type_of(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_shared::metadata::EventKind;

    use super::*;

    fn field(name: &str, kind: ConfigType, default: Option<Value>, required: bool) -> ConfigField {
        ConfigField { name: name.into(), kind, default, required, description: None }
    }

    fn metadata(config: Vec<ConfigField>) -> ModuleMetadata {
        ModuleMetadata {
            name: "momentum".into(),
            display_name: "Momentum".into(),
            description: None,
            tag: None,
            version: None,
            config,
            events: vec![EventKind::Trade],
        }
    }

    fn schema() -> ModuleMetadata {
        metadata(vec![
            field("lookback", ConfigType::Int, Some(json!(20)), false),
            field("threshold", ConfigType::Float, None, true),
            field("symbol", ConfigType::String, None, false),
            field("cooldown", ConfigType::Duration, Some(json!("5s")), false),
            field("enabled", ConfigType::Bool, Some(json!(true)), true),
            dry_run_field(),
        ])
    }

    #[test]
    fn fills_defaults_in_schema_order() {
        let config = validate_config(&schema(), &json!({"threshold": 0.5, "dry_run": false})).unwrap();
        assert_eq!(
            Value::Object(config.clone()),
            json!({"lookback": 20, "threshold": 0.5, "cooldown": "5s", "enabled": true, "dry_run": false})
        );
        assert_eq!(
            config.keys().collect::<Vec<_>>(),
            ["lookback", "threshold", "cooldown", "enabled", "dry_run"],
            "schema order, optional field without default left out"
        );
    }

    #[test]
    fn given_values_win_and_null_means_unset() {
        let config = validate_config(
            &schema(),
            &json!({"lookback": 5, "threshold": 1, "symbol": "ETH-USDT", "cooldown": 250, "enabled": null}),
        )
        .unwrap();
        assert_eq!(config["lookback"], json!(5));
        assert_eq!(config["symbol"], json!("ETH-USDT"));
        assert_eq!(config["cooldown"], json!(250));
        assert_eq!(config["enabled"], json!(true));
        assert_eq!(config["dry_run"], json!(true));
    }

    #[test]
    fn null_config_is_empty_and_dry_run_is_always_there() {
        let config = validate_config(&metadata(vec![]), &Value::Null).unwrap();
        assert_eq!(Value::Object(config), json!({"dry_run": true}));
        let config = validate_config(&metadata(vec![]), &json!({"dry_run": false})).unwrap();
        assert_eq!(Value::Object(config), json!({"dry_run": false}));
    }

    #[test]
    fn reports_every_problem_naming_field_and_type() {
        let errors = validate_config(
            &schema(),
            &json!({"lookback": 2.5, "cooldown": "soon", "dry_run": "no", "extra": 1, "enabled": "yes"}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].contains("unknown config field \"extra\""), "{}", errors[0]);
        assert!(errors[0].contains("lookback, threshold"), "{}", errors[0]);
        assert!(errors.iter().any(|e| e.contains("\"lookback\" must be of type int") && e.contains("2.5")));
        assert!(errors.iter().any(|e| e.contains("missing required config field \"threshold\" of type float")));
        assert!(errors.iter().any(|e| e.contains("\"cooldown\" must be of type duration") && e.contains("\"soon\"")));
        assert!(errors.iter().any(|e| e.contains("\"enabled\" must be of type bool")));
        assert!(errors.iter().any(|e| e.contains("\"dry_run\" must be of type bool")));
    }

    #[test]
    fn int_fields_refuse_fractions_and_values_beyond_safe_integers_naming_the_field() {
        let meta = metadata(vec![field("lookback", ConfigType::Int, None, false)]);
        for ok in [json!(0), json!(-7), json!(9_007_199_254_740_991_i64), json!(-9_007_199_254_740_991_i64)] {
            assert!(validate_config(&meta, &json!({"lookback": ok})).is_ok(), "{ok}");
        }
        for bad in [json!(1.5), json!(9_007_199_254_740_992_i64), json!(i64::MAX), json!(u64::MAX), json!(1e300)] {
            let errors = validate_config(&meta, &json!({"lookback": bad})).unwrap_err();
            assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
            assert!(errors[0].contains("\"lookback\" must be of type int"), "{}", errors[0]);
            assert!(errors[0].contains("9007199254740991"), "the range is named: {}", errors[0]);
        }
    }

    #[test]
    fn config_must_be_an_object() {
        for bad in [json!([]), json!("x"), json!(3), json!(true)] {
            let errors = validate_config(&schema(), &bad).unwrap_err();
            assert_eq!(errors.len(), 1);
            assert!(errors[0].starts_with("config must be a JSON object"), "{}", errors[0]);
        }
    }

    #[test]
    fn required_field_with_default_is_filled() {
        let meta = metadata(vec![field("size", ConfigType::Number, Some(json!(0.01)), true)]);
        let config = validate_config(&meta, &json!({})).unwrap();
        assert_eq!(Value::Object(config), json!({"size": 0.01, "dry_run": true}));
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let meta = metadata(vec![field("size", ConfigType::Number, None, false)]);
        let errors = validate_config(&meta, &json!({"size": "x".repeat(500)})).unwrap_err();
        assert!(errors[0].len() < 200, "{}", errors[0]);
        assert!(errors[0].contains("a string \"xxx"), "{}", errors[0]);
    }
}
