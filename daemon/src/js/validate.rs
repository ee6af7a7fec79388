//! Validation of a module's exports against the module contract (SPEC §1.2).
//!
//! Works on plain data read out of the engine: `metadata` as JSON and whether
//! `create` is a function. Every problem is reported, each as a `validation`
//! diagnostic whose hint is the JSON path of the offending value.
//!
//! Optional fields (`description`, `tag`, `version`, `config`, and in config
//! entries `default`, `required`, `description`) may be absent or `null`.
//! Unknown keys are ignored.

use std::collections::HashSet;

use serde_json::{Map, Value};
use strata_shared::metadata::{
    ConfigField, ConfigType, DRY_RUN_FIELD, Diagnostic, EventKind, MAX_CONFIG_FIELDS, ModuleMetadata,
};
use strata_shared::names::{validate_strategy_name, validate_tag};

/// Longest allowed `displayName`, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 80;

/// Validates the exports read from a module.
///
/// `metadata` is `module.exports.metadata` converted to JSON (`Ok(None)`
/// when it is `undefined` or a function), or the diagnostic explaining why it
/// could not be read; `create` says whether `module.exports.create` is a
/// function, or why it could not be read.
pub(super) fn validate_exports(
    metadata: Result<Option<Value>, Diagnostic>,
    create: Result<bool, Diagnostic>,
) -> Result<ModuleMetadata, Vec<Diagnostic>> {
    let mut checker = Checker::default();
    let metadata = match metadata {
        Ok(Some(Value::Object(metadata))) => checker.metadata(&metadata),
        Ok(_) => {
            checker.problem("metadata", "metadata must be an object");
            None
        }
        Err(diagnostic) => {
            checker.diagnostics.push(diagnostic);
            None
        }
    };
    match create {
        Ok(true) => {}
        Ok(false) => checker.problem("create", "create must be a function"),
        Err(diagnostic) => checker.diagnostics.push(diagnostic),
    }
    match metadata {
        Some(metadata) if checker.diagnostics.is_empty() => Ok(metadata),
        _ => Err(checker.diagnostics),
    }
}

/// Collects diagnostics while checking.
#[derive(Default)]
struct Checker {
    diagnostics: Vec<Diagnostic>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::validation(path, message));
    }

    /// Checks the metadata object; `None` when anything is wrong.
    fn metadata(&mut self, metadata: &Map<String, Value>) -> Option<ModuleMetadata> {
        let before = self.diagnostics.len();

        let name = self.required_string(metadata, "name");
        if let Some(name) = &name
            && let Err(err) = validate_strategy_name(name)
        {
            self.problem("metadata.name", err.to_string());
        }

        let display_name = self.required_string(metadata, "displayName");
        if let Some(display_name) = &display_name {
            let chars = display_name.chars().count();
            if chars == 0 || chars > MAX_DISPLAY_NAME_CHARS {
                self.problem(
                    "metadata.displayName",
                    format!(
                        "metadata.displayName must be 1 to {MAX_DISPLAY_NAME_CHARS} characters long \
                         (it has {chars})"
                    ),
                );
            }
        }

        let description = self.optional_string(metadata, "description", "metadata.description");
        let tag = self.optional_string(metadata, "tag", "metadata.tag");
        if let Some(tag) = &tag
            && let Err(err) = validate_tag(tag)
        {
            self.problem("metadata.tag", err.to_string());
        }
        let version = self.optional_string(metadata, "version", "metadata.version");
        let config = self.config(metadata.get("config"));
        let events = self.events(metadata.get("events"));

        if self.diagnostics.len() != before {
            return None;
        }
        Some(ModuleMetadata { name: name?, display_name: display_name?, description, tag, version, config, events })
    }

    /// A required string field of the metadata object.
    fn required_string(&mut self, metadata: &Map<String, Value>, key: &str) -> Option<String> {
        let path = format!("metadata.{key}");
        match metadata.get(key) {
            Some(Value::String(value)) => Some(value.clone()),
            None | Some(Value::Null) => {
                self.problem(&path, format!("{path} is required"));
                None
            }
            Some(other) => {
                self.problem(&path, format!("{path} must be a string, not {}", type_of(other)));
                None
            }
        }
    }

    /// An optional string field; absent and `null` are `None`.
    fn optional_string(&mut self, object: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match object.get(key) {
            Some(Value::String(value)) => Some(value.clone()),
            None | Some(Value::Null) => None,
            Some(other) => {
                self.problem(path, format!("{path} must be a string, not {}", type_of(other)));
                None
            }
        }
    }

    /// The config schema, with the `dry_run` field appended when missing.
    fn config(&mut self, config: Option<&Value>) -> Vec<ConfigField> {
        let entries: &[Value] = match config {
            None | Some(Value::Null) => &[],
            Some(Value::Array(entries)) => entries,
            Some(other) => {
                self.problem("metadata.config", format!("metadata.config must be an array, not {}", type_of(other)));
                return Vec::new();
            }
        };
        // SPEC §8: metadata is bounded, and checked in linear time (a set of
        // the names seen, not a scan of them for each entry).
        if entries.len() > MAX_CONFIG_FIELDS {
            self.problem(
                "metadata.config",
                format!(
                    "metadata.config declares {} fields; a module may declare at most {MAX_CONFIG_FIELDS}",
                    entries.len()
                ),
            );
            return Vec::new();
        }
        let mut fields: Vec<ConfigField> = Vec::with_capacity(entries.len() + 1);
        let mut names: HashSet<&str> = HashSet::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let path = format!("metadata.config[{index}]");
            let Value::Object(entry) = entry else {
                self.problem(&path, format!("{path} must be an object, not {}", type_of(entry)));
                continue;
            };
            let name_path = format!("{path}.name");
            let name = match entry.get("name") {
                Some(Value::String(name)) if name.is_empty() => {
                    self.problem(&name_path, format!("{name_path} must not be empty"));
                    None
                }
                Some(Value::String(name)) if !names.insert(name.as_str()) => {
                    self.problem(&name_path, format!("{name_path}: duplicate config field name {name:?}"));
                    None
                }
                Some(Value::String(name)) => Some(name.clone()),
                None | Some(Value::Null) => {
                    self.problem(&name_path, format!("{name_path} is required"));
                    None
                }
                Some(other) => {
                    self.problem(&name_path, format!("{name_path} must be a string, not {}", type_of(other)));
                    None
                }
            };
            let kind = self.config_type(entry.get("type"), &format!("{path}.type"));
            if let (Some(name), Some(kind)) = (&name, kind)
                && name == DRY_RUN_FIELD
                && kind != ConfigType::Bool
            {
                self.problem(
                    format!("{path}.type"),
                    format!("{path}.type: the {DRY_RUN_FIELD} field must have type bool, not {kind}"),
                );
            }
            let default_path = format!("{path}.default");
            let default = match entry.get("default") {
                None | Some(Value::Null) => None,
                Some(default) => {
                    if let Some(kind) = kind
                        && !kind.accepts(default)
                    {
                        self.problem(
                            &default_path,
                            format!("{default_path} {default} is not a valid {kind}{}", type_hint(kind)),
                        );
                    }
                    Some(default.clone())
                }
            };
            let required_path = format!("{path}.required");
            let required = match entry.get("required") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(required)) => *required,
                Some(other) => {
                    self.problem(&required_path, format!("{required_path} must be a boolean, not {}", type_of(other)));
                    false
                }
            };
            let description = self.optional_string(entry, "description", &format!("{path}.description"));
            if let (Some(name), Some(kind)) = (name, kind) {
                fields.push(ConfigField { name, kind, default, required, description });
            }
        }
        if !names.contains(DRY_RUN_FIELD) {
            fields.push(ConfigField {
                name: DRY_RUN_FIELD.to_owned(),
                kind: ConfigType::Bool,
                default: Some(Value::Bool(true)),
                required: false,
                description: None,
            });
        }
        fields
    }

    /// The `type` of a config entry.
    fn config_type(&mut self, kind: Option<&Value>, path: &str) -> Option<ConfigType> {
        let allowed = || ConfigType::ALL.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ");
        match kind {
            Some(Value::String(name)) => {
                let kind = ConfigType::parse(name);
                if kind.is_none() {
                    self.problem(path, format!("{path}: unknown type {name:?} (expected one of {})", allowed()));
                }
                kind
            }
            None | Some(Value::Null) => {
                self.problem(path, format!("{path} is required (one of {})", allowed()));
                None
            }
            Some(other) => {
                self.problem(path, format!("{path} must be a string, not {}", type_of(other)));
                None
            }
        }
    }

    /// The subscribed events: at least one, known, no duplicates.
    fn events(&mut self, events: Option<&Value>) -> Vec<EventKind> {
        let entries = match events {
            Some(Value::Array(entries)) => entries,
            None | Some(Value::Null) => {
                self.problem("metadata.events", "metadata.events is required");
                return Vec::new();
            }
            Some(other) => {
                self.problem("metadata.events", format!("metadata.events must be an array, not {}", type_of(other)));
                return Vec::new();
            }
        };
        if entries.is_empty() {
            self.problem("metadata.events", "metadata.events must list at least one event");
        }
        let mut kinds = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let path = format!("metadata.events[{index}]");
            let kind = match entry {
                Value::String(name) => EventKind::parse(name),
                _ => None,
            };
            match kind {
                Some(kind) if kinds.contains(&kind) => {
                    self.problem(&path, format!("{path}: duplicate event {kind}"));
                }
                Some(kind) => kinds.push(kind),
                None => {
                    let known = EventKind::ALL.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ");
                    self.problem(&path, format!("{path}: unknown event {entry} (expected one of {known})"));
                }
            }
        }
        kinds
    }
}

/// What a default of `kind` must look like, for messages.
fn type_hint(kind: ConfigType) -> &'static str {
    match kind {
        ConfigType::Bool => " (expected true or false)",
        ConfigType::Int => " (expected an integer from -9007199254740991 to 9007199254740991)",
        ConfigType::Float | ConfigType::Number => " (expected a number)",
        ConfigType::String => " (expected a string)",
        ConfigType::Duration => {
            " (expected a string like \"150ms\", \"5s\", \"2m\", \"1h\" or a non-negative number of \
             milliseconds)"
        }
    }
}

/// JSON type name of `value`, for messages ("a string", "null"…).
pub(crate) fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
