//! `GET /openapi.json`: the API's routes as an OpenAPI 3.1 document.
//!
//! [`ROUTES`] is the one table of every route the daemon serves. The router
//! refuses (in debug builds, so in every test) to register a route missing
//! from it, and an end-to-end test calls every route of the served document
//! on a live daemon, so the document and the router cannot drift apart.
//! Bodies are described in prose and by the types of `strata_shared::api`
//! (named in `x-rust-type`); see `docs/api.md` for examples.

use serde_json::{Map, Value, json};

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
    /// The request body's type in `strata_shared::api`, if it takes one.
    pub request: Option<&'static str>,
    /// The answer's type in `strata_shared::api` (or a media type).
    pub response: &'static str,
}

const fn doc(
    method: &'static str,
    template: &'static str,
    summary: &'static str,
    status: u16,
    request: Option<&'static str>,
    response: &'static str,
) -> RouteDoc {
    RouteDoc { method, template, summary, status, request, response }
}

/// Every route, in the order of `docs/api.md`.
pub const ROUTES: &[RouteDoc] = &[
    doc("GET", "/healthz", "Liveness, load progress and registry errors", 200, None, "Health"),
    doc("GET", "/metrics", "Prometheus metrics (text format)", 200, None, "text/plain"),
    doc("GET", "/openapi.json", "This document", 200, None, "application/json"),
    doc("GET", "/strategies", "Metadata of each strategy's latest revision", 200, None, "StrategyList"),
    doc("GET", "/strategies/{name}", "One strategy's latest metadata", 200, None, "StrategyInfo"),
    doc(
        "GET",
        "/strategies/modules",
        "Module summaries with running blocks (filters, paging)",
        200,
        None,
        "ModulesPage",
    ),
    doc("POST", "/strategies/modules", "Upload a revision", 201, Some("UploadRequest"), "UploadResponse"),
    doc(
        "PUT",
        "/strategies/modules/{selector}",
        "Upload a revision of that strategy",
        201,
        Some("UploadRequest"),
        "UploadResponse",
    ),
    doc("GET", "/strategies/modules/{selector}", "The resolved revision's summary", 200, None, "RevisionSummary"),
    doc(
        "DELETE",
        "/strategies/modules/{selector}",
        "Delete a revision or a strategy (409 with usage when referenced)",
        200,
        None,
        "DeleteResponse",
    ),
    doc(
        "GET",
        "/strategies/modules/{selector}/source",
        "The revision's JavaScript",
        200,
        None,
        "application/javascript",
    ),
    doc(
        "GET",
        "/strategies/modules/{selector}/usage",
        "The revision's usage and a page of its instances",
        200,
        None,
        "UsageResponse",
    ),
    doc(
        "PUT",
        "/strategies/modules/{name}/tags/{tag}",
        "Move a tag (refreshing its followers by default)",
        200,
        Some("TagMoveRequest"),
        "TagResponse",
    ),
    doc("DELETE", "/strategies/modules/{name}/tags/{tag}", "Delete a tag", 200, None, "TagResponse"),
    doc(
        "POST",
        "/strategies/modules/{selector}/restart",
        "Restart every instance pinned to the hash",
        200,
        None,
        "BatchResponse",
    ),
    doc(
        "POST",
        "/strategies/modules/{selector}/repin",
        "Move every instance pinned to the hash onto `to`",
        200,
        Some("RepinRequest"),
        "BatchResponse",
    ),
    doc("POST", "/strategies/refresh", "Full or targeted refresh", 200, Some("RefreshRequest"), "RefreshResponse"),
    doc(
        "GET",
        "/strategies/registry",
        "The registry with usage per revision (JSON or CSV)",
        200,
        None,
        "RegistryExport",
    ),
    doc(
        "GET",
        "/strategy/instances",
        "Instances (filters strategy, hash, state, drift; paging)",
        200,
        None,
        "InstancesPage",
    ),
    doc("POST", "/strategy/instances", "Create an instance", 201, Some("CreateInstanceRequest"), "InstanceView"),
    doc("GET", "/strategy/instances/{id}", "One instance", 200, None, "InstanceView"),
    doc(
        "PUT",
        "/strategy/instances/{id}",
        "Replace an instance's config",
        200,
        Some("UpdateInstanceRequest"),
        "InstanceView",
    ),
    doc("DELETE", "/strategy/instances/{id}", "Delete an instance (stopping it first)", 200, None, "InstanceView"),
    doc("GET", "/strategy/instances/{id}/logs", "The instance's recent log lines", 200, None, "LogLines"),
    doc("POST", "/strategy/instances/{id}/{action}", "Start, stop or restart an instance", 200, None, "InstanceView"),
    doc("GET", "/providers", "Configured market venues", 200, None, "ProviderList"),
    doc(
        "GET",
        "/ws",
        "WebSocket usage stream (see docs/websocket.md)",
        101,
        None,
        "strata_shared::stream::ServerMessage",
    ),
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

fn operation(route: &RouteDoc) -> Value {
    let parameters: Vec<Value> = route
        .template
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(parameter)
        .collect();
    let media = if route.response.contains('/') { route.response } else { "application/json" };
    let mut op = json!({
        "summary": route.summary,
        "operationId": format!("{} {}", route.method, route.template),
        "parameters": parameters,
        "responses": {
            route.status.to_string(): {
                "description": route.summary,
                "content": {media: {"schema": {}, "x-rust-type": route.response}},
            },
            "default": {
                "description": "error envelope",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            },
        },
    });
    if let Some(request) = route.request {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {}, "x-rust-type": request}},
        });
    }
    if route.method != "GET" || route.template == "/ws" {
        op["security"] = json!([{"bearer": []}, {}]);
    }
    op
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.template).or_insert_with(|| json!({}));
        item[route.method.to_ascii_lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "stratad",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Strata daemon HTTP API. Examples: docs/api.md. Mutating routes and /ws need `Authorization: Bearer` when a token is configured.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "ErrorBody": {
                    "type": "object",
                    "required": ["status", "error"],
                    "properties": {
                        "status": {"const": "error"},
                        "error": {"type": "string"},
                        "diagnostics": {"type": "array"},
                        "candidates": {"type": "array", "items": {"type": "string"}},
                        "usage": {"type": "array"},
                    },
                },
            },
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
}
