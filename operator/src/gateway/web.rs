//! The web client, served from the binary: no build step, no third-party host.
//!
//! Every response carries a Content-Security-Policy that allows nothing but this origin, so the
//! browser itself guarantees that the client contacts no CDN, font host or analytics service.

use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::domain::{RESERVED_TENANT_NAMES, RoomName, TenantName};

const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The client's static files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/app.js"),
    ),
    (
        "moderation.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/moderation.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/i18n.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../web/style.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../web/icon.svg"),
    ),
];

const NOT_FOUND_HTML: &str = "<!doctype html><html lang=\"de\"><meta charset=\"utf-8\">\
<title>Treffpunkt</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
<main class=\"notice\"><h1>Diesen Raum gibt es nicht.</h1><p lang=\"en\">This room does not exist.</p>\
<p><a href=\"/\">Treffpunkt</a></p></main></html>";

/// `GET /`: the client, which offers to start a meeting.
pub async fn landing_page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `GET /{tenant}/{room}`: the client for one room. Names with capitals are redirected to
/// their lower-case form, so that "Skatclub" and "skatclub" meet in the same room.
pub async fn room_page(Path((tenant, room)): Path<(String, String)>) -> Response {
    if RESERVED_TENANT_NAMES.contains(&tenant.as_str()) {
        return not_found();
    }
    if TenantName::new(tenant.as_str()).is_ok() && RoomName::new(room.as_str()).is_ok() {
        return Html(INDEX_HTML).into_response();
    }
    let (lower_tenant, lower_room) = (tenant.to_lowercase(), room.to_lowercase());
    if TenantName::new(lower_tenant.as_str()).is_ok() && RoomName::new(lower_room.as_str()).is_ok()
    {
        return Redirect::permanent(&format!("/{lower_tenant}/{lower_room}")).into_response();
    }
    not_found()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Html(NOT_FOUND_HTML)).into_response()
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, content)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from(*content),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Adds the privacy and security headers to every response.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; \
             media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; \
             object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self)"),
    );
    response
}
