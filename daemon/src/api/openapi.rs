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
}

const fn doc(
    method: &'static str,
    template: &'static str,
    summary: &'static str,
    status: u16,
    request: Option<SchemaFn>,
    response: Body,
) -> RouteDoc {
    RouteDoc { method, template, summary, status, request, response }
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
    ),
    doc(
        "POST",
        "/strategies/modules",
        "Upload a revision",
        201,
        Some(schema::<UploadRequest>),
        Body::Json(schema::<UploadResponse>),
    ),
    doc(
        "PUT",
        "/strategies/modules/{selector}",
        "Upload a revision of that strategy",
        201,
        Some(schema::<UploadRequest>),
        Body::Json(schema::<UploadResponse>),
    ),
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
    ),
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
    ),
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
        "Full or targeted refresh",
        200,
        Some(schema::<RefreshRequest>),
        Body::Json(schema::<RefreshResponse>),
    ),
    doc(
        "GET",
        "/strategies/registry",
        "The registry with usage per revision (JSON, or CSV with ?format=csv)",
        200,
        None,
        Body::JsonOrText(schema::<RegistryExport>, "text/csv"),
    ),
    doc(
        "GET",
        "/strategy/instances",
        "Instances (filters strategy, hash, state, drift; paging)",
        200,
        None,
        Body::Json(schema::<InstancesPage>),
    ),
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
    doc("GET", "/ws", "WebSocket usage stream (see docs/websocket.md)", 101, None, Body::Json(schema::<ServerMessage>)),
];

/// Whether `method template` is documented.
pub fn documented(method: &str, template: &str) -> bool {
    ROUTES.iter().any(|r| r.method == method && r.template == template)
}

fn parameter(name: &str) -> Value {
    let mut schema = json!({"type": "string"});
    if name == "action" {
        schema = json!({"type": "string", "enum": ["start", "stop", "restart"]});
    }
    json!({"name": name, "in": "path", "required": true, "schema": schema})
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
    let parameters: Vec<Value> = route
        .template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(parameter)
        .collect();
    let content = match route.response {
        Body::Json(schema) => json!({"application/json": {"schema": schema(generator)}}),
        Body::Text(media) => json!({media: {"schema": {"type": "string"}}}),
        Body::JsonOrText(schema, media) => json!({
            "application/json": {"schema": schema(generator)},
            media: {"schema": {"type": "string"}},
        }),
    };
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{} {}", route.method, route.template),
        "parameters": parameters,
        "responses": {
            route.status.to_string(): {"description": route.summary, "content": content},
            "default": {
                "description": "error envelope",
                "content": {"application/json": {"schema": error}},
            },
        },
    });
    if let Some(request) = route.request {
        op["requestBody"] = json!({
            "required": true,
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
