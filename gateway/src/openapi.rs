//! The OpenAPI 3 document of the REST API, served at `GET /api/v1/openapi.json`.
//! Hand-written (`openapi.json` next to this file); a test checks that every
//! route of [`crate::http::routes`] is in it.

/// The document, JSON text.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
