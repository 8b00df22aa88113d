//! The OpenAPI document at `/api/v1/openapi.json` describes every route of
//! the router, and every path it describes exists.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Backend, Gateway};
use serde_json::Value;
use tower::ServiceExt;

/// `(method, path)` of every `.route(...)` in `src/http.rs`.
fn router_routes() -> Vec<(String, String)> {
    let src = include_str!("../src/http.rs");
    let mut out = Vec::new();
    // `.skip(1)`: the text before the first `.route("` is no route.
    for part in src.split(".route(\"").skip(1) {
        let (path, rest) = part.split_once('"').unwrap();
        let rest = rest.trim_start_matches(',').trim_start();
        let method = rest.split('(').next().unwrap().trim();
        for m in ["get", "post", "put", "patch", "delete"] {
            if method == m {
                out.push((m.to_owned(), path.to_owned()));
                break;
            }
        }
    }
    out
}

async fn get(gw: &Gateway, method: &str, path: &str) -> (u16, String) {
    let req = axum::http::Request::builder()
        .method(method.to_uppercase().as_str())
        .uri(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = gw.router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn every_router_route_is_in_the_openapi_document_and_back() {
    let gw = Gateway::start_with(Backend::Memory, |c| c.dev_tokens = true).await;
    let (status, body) = get(&gw, "get", "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = router_routes();
    assert!(routes.len() >= 11, "parsed routes: {routes:?}");
    for (method, path) in &routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing from openapi.json");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
        assert!(
            op["security"].is_array(),
            "{method} {path} states no security"
        );
    }
    // Every documented operation is served (with path parameters filled in).
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} documented but not routed"
            );
            let concrete = path.replace("{id}", "x");
            let (status, _) = get(&gw, method, &concrete).await;
            // `/x` ids are unknown (404 is the answer, not a missing route).
            assert!(
                status != 405 && (status != 404 || concrete.contains("/x")),
                "{method} {concrete}: {status}"
            );
        }
    }
    // Every $ref resolves.
    let text = body.as_str();
    // `.skip(1)`: the text before the first `$ref` names no schema.
    for part in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    gw.stop().await;
}
