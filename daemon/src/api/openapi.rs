//! `GET /openapi.json`: the API's routes as an OpenAPI 3.1 document.
//!
//! [`ROUTES`] is the one table of every route the daemon serves. The router
//! refuses (in debug builds, so in every test) to register a route missing
//! from it, and an end-to-end test calls every route of the served document
//! on a live daemon, so the document and the router cannot drift apart.
//! Bodies are JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses) derived with
//! `schemars` from the very serde types the handlers serialise and decode
//! (`strata_shared::api`, plus the log and stream types), collected under
//! `components/schemas` and referenced with `$ref`. The schemas follow the
//! types' deserialisation contract: a field that defaults when absent is not
//! `required`. `docs/api.md` has examples generated from a live daemon.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use strata_shared::api::{
    BatchResponse, CreateInstancesBody, CreatedInstances, DeleteResponse, ErrorBody, Health, InstanceDeleted,
    InstanceView, InstancesPage, ModulesPage, ProviderList, RefreshRequest, RefreshResponse, RegistryExport,
    RepinRequest, RevisionSummary, StrategyInfo, StrategyList, TagMoveRequest, TagResponse, UpdateInstanceRequest,
    UploadRequest, UploadResponse, UsageResponse,
};
use strata_shared::stream::{ClientMessage, ServerMessage};

use super::instances::ListQuery;
use super::modules::{DeleteTagQuery, ExportQuery, ModulesQuery, UsageQuery};
use super::stream::StreamQuery;
use crate::runtime::logs::LogLines;

/// Adds a body type's schema to the generator and answers a `$ref` to it.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// `application/json`, described by a type's schema.
    Json(SchemaFn),
    /// Another media type (a string body: metrics, module source).
    Text(&'static str),
    /// JSON by default, or a string of another media type when the query
    /// asks for it (the registry export's `?format=csv`).
    JsonOrText(SchemaFn, &'static str),
}

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path template, parameters in braces (the metrics label too).
    pub template: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// The success status.
    pub status: u16,
    /// The request body's schema, if it takes one.
    pub request: Option<SchemaFn>,
    /// The answer.
    pub response: Body,
    /// The query string's schema (the very struct the handler decodes it
    /// into), if it takes one: each property is documented as a parameter.
    pub query: Option<SchemaFn>,
    /// Another success status with the same body (an upload of bytes
    /// already stored answers 200 instead of 201).
    pub also: Option<u16>,
    /// Whether the request body may be left out (a refresh without one
    /// targets every instance).
    pub body_optional: bool,
}

impl RouteDoc {
    /// Documents the route's query string with `T`'s schema.
    const fn with_query(mut self, query: SchemaFn) -> Self {
        self.query = Some(query);
        self
    }

    /// Documents the request body as optional.
    const fn optional_body(mut self) -> Self {
        self.body_optional = true;
        self
    }

    /// Documents a second success status with the same body.
    const fn also(mut self, status: u16) -> Self {
        self.also = Some(status);
        self
    }

    /// The success statuses: the main one, then [`RouteDoc::also`]'s.
    pub fn statuses(&self) -> impl Iterator<Item = u16> {
        std::iter::once(self.status).chain(self.also)
    }
}

const fn doc(
    method: &'static str,
    template: &'static str,
    summary: &'static str,
    status: u16,
    request: Option<SchemaFn>,
    response: Body,
) -> RouteDoc {
    RouteDoc { method, template, summary, status, request, response, query: None, also: None, body_optional: false }
}

/// Every route, in the order of `docs/api.md`.
pub const ROUTES: &[RouteDoc] = &[
    doc("GET", "/healthz", "Liveness, load progress and registry errors", 200, None, Body::Json(schema::<Health>)),
    doc("GET", "/metrics", "Prometheus metrics (text format)", 200, None, Body::Text("text/plain")),
    doc("GET", "/openapi.json", "This document", 200, None, Body::Json(openapi_schema)),
    doc(
        "GET",
        "/strategies",
        "Metadata of each strategy's latest revision",
        200,
        None,
        Body::Json(schema::<StrategyList>),
    ),
    doc("GET", "/strategies/{name}", "One strategy's latest metadata", 200, None, Body::Json(schema::<StrategyInfo>)),
    doc(
        "GET",
        "/strategies/modules",
        "Module summaries with running blocks (filters, paging)",
        200,
        None,
        Body::Json(schema::<ModulesPage>),
    )
    .with_query(schema::<ModulesQuery>),
    doc(
        "POST",
        "/strategies/modules",
        "Upload a revision (201 new, 200 when these bytes are already stored)",
        201,
        Some(schema::<UploadRequest>),
        Body::Json(schema::<UploadResponse>),
    )
    .also(200),
    doc(
        "PUT",
        "/strategies/modules/{selector}",
        "Upload a revision of that strategy (201 new, 200 when these bytes are already stored)",
        201,
        Some(schema::<UploadRequest>),
        Body::Json(schema::<UploadResponse>),
    )
    .also(200),
    doc(
        "GET",
        "/strategies/modules/{selector}",
        "The resolved revision's summary",
        200,
        None,
        Body::Json(schema::<RevisionSummary>),
    ),
    doc(
        "DELETE",
        "/strategies/modules/{selector}",
        "Delete a revision or a strategy (409 with usage when referenced)",
        200,
        None,
        Body::Json(schema::<DeleteResponse>),
    ),
    doc(
        "GET",
        "/strategies/modules/{selector}/source",
        "The revision's JavaScript",
        200,
        None,
        Body::Text("application/javascript"),
    ),
    doc(
        "GET",
        "/strategies/modules/{selector}/usage",
        "The revision's usage and a page of its instances",
        200,
        None,
        Body::Json(schema::<UsageResponse>),
    )
    .with_query(schema::<UsageQuery>),
    doc(
        "PUT",
        "/strategies/modules/{name}/tags/{tag}",
        "Move a tag (refreshing its followers by default)",
        200,
        Some(schema::<TagMoveRequest>),
        Body::Json(schema::<TagResponse>),
    ),
    doc(
        "DELETE",
        "/strategies/modules/{name}/tags/{tag}",
        "Delete a tag",
        200,
        None,
        Body::Json(schema::<TagResponse>),
    )
    .with_query(schema::<DeleteTagQuery>),
    doc(
        "POST",
        "/strategies/modules/{selector}/restart",
        "Restart every instance pinned to the hash",
        200,
        None,
        Body::Json(schema::<BatchResponse>),
    ),
    doc(
        "POST",
        "/strategies/modules/{selector}/repin",
        "Move every instance pinned to the hash onto `to`",
        200,
        Some(schema::<RepinRequest>),
        Body::Json(schema::<BatchResponse>),
    ),
    doc(
        "POST",
        "/strategies/refresh",
        "Full or targeted refresh (no body: every instance)",
        200,
        Some(schema::<RefreshRequest>),
        Body::Json(schema::<RefreshResponse>),
    )
    .optional_body(),
    doc(
        "GET",
        "/strategies/registry",
        "The registry with usage per revision (JSON, or CSV with ?format=csv)",
        200,
        None,
        Body::JsonOrText(schema::<RegistryExport>, "text/csv"),
    )
    .with_query(schema::<ExportQuery>),
    doc(
        "GET",
        "/strategy/instances",
        "Instances (filters strategy, hash, state, drift; paging)",
        200,
        None,
        Body::Json(schema::<InstancesPage>),
    )
    .with_query(schema::<ListQuery>),
    doc(
        "POST",
        "/strategy/instances",
        "Create an instance, or up to 1,000 in one transaction with {instances:[…]} (per-item results)",
        201,
        Some(schema::<CreateInstancesBody>),
        Body::Json(schema::<CreatedInstances>),
    ),
    doc("GET", "/strategy/instances/{id}", "One instance", 200, None, Body::Json(schema::<InstanceView>)),
    doc(
        "PUT",
        "/strategy/instances/{id}",
        "Replace an instance's config",
        200,
        Some(schema::<UpdateInstanceRequest>),
        Body::Json(schema::<InstanceView>),
    ),
    doc(
        "DELETE",
        "/strategy/instances/{id}",
        "Delete an instance (stopping it first)",
        200,
        None,
        Body::Json(schema::<InstanceDeleted>),
    ),
    doc(
        "GET",
        "/strategy/instances/{id}/logs",
        "The instance's recent log lines",
        200,
        None,
        Body::Json(schema::<LogLines>),
    ),
    doc(
        "POST",
        "/strategy/instances/{id}/{action}",
        "Start, stop or restart an instance",
        200,
        None,
        Body::Json(schema::<InstanceView>),
    ),
    doc("GET", "/providers", "Configured market venues", 200, None, Body::Json(schema::<ProviderList>)),
    doc("GET", "/ws", "WebSocket usage stream (see docs/websocket.md)", 101, None, Body::Json(schema::<ServerMessage>))
        .with_query(schema::<StreamQuery>),
];

/// The methods served on a concrete request path (`/strategy/instances/a1`),
/// in the order of [`ROUTES`]: what a 405's `Allow` header lists. A segment
/// matches a `{parameter}` when it is not empty.
pub fn methods_of(path: &str) -> Vec<&'static str> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut methods: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        let template: Vec<&str> = route.template.trim_start_matches('/').split('/').collect();
        let matches =
            template.len() == segments.len() && template.iter().zip(&segments).all(|(t, s)| segment_matches(t, s));
        if matches && !methods.contains(&route.method) {
            methods.push(route.method);
        }
    }
    methods
}

/// Whether a path segment fills a template segment: a literal equals it,
/// `{action}` is one of the actions, any other parameter is not empty.
fn segment_matches(template: &str, segment: &str) -> bool {
    match template {
        "{action}" => ACTIONS.contains(&segment),
        t if t.starts_with('{') => !segment.is_empty(),
        t => t == segment,
    }
}

/// What `{action}` in `/strategy/instances/{id}/{action}` may be.
const ACTIONS: [&str; 3] = ["start", "stop", "restart"];

/// Whether `method template` is documented.
pub fn documented(method: &str, template: &str) -> bool {
    ROUTES.iter().any(|r| r.method == method && r.template == template)
}

/// A strategy name (SPEC §1.1; `..` is refused too, which a pattern without
/// look-ahead cannot say).
pub(super) const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// A hash filter: `sha256:<hex>` or bare hex, 8 to 64 digits.
pub(super) const HASH_PATTERN: &str = "^(sha256:)?[0-9A-Fa-f]{8,64}$";
/// A tag.
const TAG_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";
/// An instance id.
const ID_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";
/// A selector (SPEC §1.3): `name`, `name:tag`, `name@<hash>`, `sha256:<hex>`
/// or bare hex, a hash being 8 to 64 hex digits.
const SELECTOR_PATTERN: &str = "^([a-z0-9][a-z0-9._-]{0,63}(:[A-Za-z0-9][A-Za-z0-9._-]{0,63}|@(sha256:)?[0-9A-Fa-f]{8,64})?|(sha256:)?[0-9A-Fa-f]{8,64})$";

/// A path parameter, with the syntax the handler accepts.
fn parameter(name: &str) -> Value {
    let schema = match name {
        "action" => json!({"type": "string", "enum": ACTIONS}),
        "name" => json!({"type": "string", "pattern": NAME_PATTERN}),
        "tag" => json!({"type": "string", "pattern": TAG_PATTERN}),
        "id" => json!({"type": "string", "pattern": ID_PATTERN}),
        "selector" => json!({"type": "string", "pattern": SELECTOR_PATTERN}),
        other => unreachable!("path parameter {{{other}}} has no documented syntax"),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// Drops `null` from an optional query field's schema (in a query string a
/// field is absent, never null), and writes a unit enum as one `enum`.
fn not_null(mut schema: Value) -> Value {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
    }
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut) {
        values.retain(|v| !v.is_null());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get_mut(key).and_then(Value::as_array_mut) {
            options.retain(|o| o.get("type").is_none_or(|t| t != "null"));
            if options.len() == 1 {
                let only = options[0].clone();
                schema.as_object_mut().expect("an object schema").remove(key);
                let Value::Object(only) = only else { continue };
                schema.as_object_mut().expect("an object schema").extend(only);
            }
        }
    }
    // A unit enum (`oneOf` of one `const` each) reads better as one `enum`.
    let consts: Option<Vec<Value>> = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .and_then(|options| options.iter().map(|o| o.get("const").cloned()).collect());
    if let Some(values) = consts {
        return json!({"type": "string", "enum": values});
    }
    schema
}

/// The query parameters of a query struct: one per property, schemas
/// inlined (parameters cannot `$ref` into a struct's fields).
fn query_parameters(query: SchemaFn) -> Vec<Value> {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    let schema = query(&mut generator).to_value();
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else { return Vec::new() };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = not_null(property.clone());
            let description = property.as_object_mut().and_then(|p| p.remove("description"));
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                parameter["description"] = description;
            }
            parameter
        })
        .collect()
}

/// This document, loosely: an OpenAPI 3.1 object.
fn openapi_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "required": ["openapi", "info", "paths", "components"],
        "properties": {"openapi": {"const": "3.1.0"}},
    })
}

fn operation(route: &RouteDoc, generator: &mut SchemaGenerator, error: &Schema) -> Value {
    let mut parameters: Vec<Value> = route
        .template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(parameter)
        .collect();
    parameters.extend(route.query.map(query_parameters).unwrap_or_default());
    let content = match route.response {
        Body::Json(schema) => json!({"application/json": {"schema": schema(generator)}}),
        Body::Text(media) => json!({media: {"schema": {"type": "string"}}}),
        Body::JsonOrText(schema, media) => json!({
            "application/json": {"schema": schema(generator)},
            media: {"schema": {"type": "string"}},
        }),
    };
    let mut responses = Map::new();
    for status in route.statuses() {
        responses.insert(status.to_string(), json!({"description": route.summary, "content": content}));
    }
    responses.insert(
        "default".into(),
        json!({"description": "error envelope", "content": {"application/json": {"schema": error}}}),
    );
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{} {}", route.method, route.template),
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(request) = route.request {
        op["requestBody"] = json!({
            "required": !route.body_optional,
            "content": {"application/json": {"schema": request(generator)}},
        });
    }
    if route.method != "GET" || route.template == "/ws" {
        op["security"] = json!([{"bearer": []}, {}]);
    }
    op
}

/// The generator every schema of the document goes through: draft 2020-12,
/// definitions under `#/components/schemas`.
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator()
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut generator = generator();
    let error = schema::<ErrorBody>(&mut generator);
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.template).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation(route, &mut generator, &error);
    }
    // What a `/ws` client may send; the 101 answer's schema is what it receives.
    schema::<ClientMessage>(&mut generator);
    let mut schemas: Vec<(String, Value)> = generator.take_definitions(true).into_iter().collect();
    schemas.sort_by(|(a, _), (b, _)| a.cmp(b));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stratad",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Strata daemon HTTP API. Examples: docs/api.md. Mutating routes and /ws need `Authorization: Bearer` when a token is configured. The 101 answer of /ws is described by the schema of the messages the server sends over the socket (ServerMessage); ClientMessage is what a client may send.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": Map::from_iter(schemas),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_path_parameters() {
        let mut seen = std::collections::BTreeSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.template)), "{} {} twice", route.method, route.template);
        }
        let document = document();
        let usage = &document["paths"]["/strategies/modules/{selector}/usage"]["get"];
        assert_eq!(usage["parameters"][0]["name"], "selector");
        assert!(document["paths"]["/strategy/instances/{id}/{action}"]["post"]["security"].is_array());
        let refresh = &document["paths"]["/strategies/refresh"]["post"]["requestBody"];
        assert_eq!(refresh["required"], false, "no body = every instance");
        assert_eq!(document["paths"]["/strategy/instances"]["post"]["requestBody"]["required"], true);
    }

    #[test]
    fn the_methods_of_a_path_are_those_of_the_templates_it_fills() {
        assert_eq!(methods_of("/strategies"), ["GET"]);
        assert_eq!(methods_of("/strategies/modules/momentum:prod"), ["PUT", "GET", "DELETE"]);
        assert_eq!(methods_of("/strategy/instances/a1/logs"), ["GET"], "logs is not an {{action}}");
        assert_eq!(methods_of("/strategy/instances/a1/stop"), ["POST"]);
        assert!(methods_of("/strategy/instances/a1/pause").is_empty());
        assert!(methods_of("/strategies/modules/").is_empty(), "an empty segment fills no parameter");
        assert!(methods_of("/nowhere").is_empty());
    }

    fn component<'a>(document: &'a Value, reference: &Value) -> &'a Value {
        let name = reference["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")).expect("a $ref");
        &document["components"]["schemas"][name]
    }

    #[test]
    fn json_bodies_are_schemas_from_the_serde_types() {
        let document = document();
        for route in ROUTES {
            let op = &document["paths"][route.template][route.method.to_ascii_lowercase()];
            let answer = &op["responses"][route.status.to_string()]["content"];
            if let Body::Json(_) | Body::JsonOrText(..) = route.response {
                let schema = &answer["application/json"]["schema"];
                assert!(schema.is_object() && schema != &json!({}), "{} {}: {schema}", route.method, route.template);
            }
            if route.request.is_some() {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                assert!(component(&document, schema).is_object(), "{} {}", route.method, route.template);
            }
        }
        let schemas = &document["components"]["schemas"];
        // rename_all = "camelCase", deny_unknown_fields, skip_serializing_if / default.
        let upload = &schemas["UploadRequest"];
        assert_eq!(upload["additionalProperties"], false);
        assert!(upload["properties"]["promoteLatest"].is_object());
        assert_eq!(upload["required"], json!(["source"]));
        // flatten: the revision's fields sit beside the summary's own.
        let summary = &schemas["RevisionSummary"]["properties"];
        assert!(summary["hash"].is_object() && summary["selector"].is_object() && summary["revision"].is_null());
        // Timestamps and hashes as they are written, not as Rust holds them.
        assert_eq!(schemas["InstanceView"]["properties"]["createdAt"]["format"], "date-time");
        assert_eq!(schemas["RevisionHash"]["pattern"], "^sha256:[0-9a-f]{64}$");
        // Internally tagged stream messages: one alternative per `type`.
        assert_eq!(schemas["ServerMessage"]["oneOf"].as_array().map(Vec::len), Some(6));
    }
}
