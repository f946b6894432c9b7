//! The web client, served from the binary: no build step, no third-party host.
//!
//! `/` is the city's start page, `/<tenant>` a tenant's own start page in its colours and with
//! its logo (`/api/v1/tenants/<tenant>` tells the client how it looks), `/<tenant>/<room>` a
//! room; anything else is a page that says so in German and English and leads to the start.
//!
//! Every response carries a Content-Security-Policy that allows nothing but this origin, so the
//! browser itself guarantees that the client contacts no CDN, font host or analytics service.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use serde::Serialize;
use tracing::warn;

use super::Gateway;
use crate::domain::{RESERVED_TENANT_NAMES, RoomName, Tenant, TenantName};
use crate::store::Store;

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
        "devices.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/devices.js"),
    ),
    (
        "layout.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/layout.js"),
    ),
    (
        "shortcuts.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/shortcuts.js"),
    ),
    (
        "branding.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web/branding.js"),
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

const NOT_FOUND_HTML: &str = "<!doctype html><html lang=\"de\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Nicht gefunden – Treffpunkt</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
<body><main class=\"notice\"><h1>Diese Seite gibt es nicht.</h1>\
<p>Prüfen Sie die Adresse, oder beginnen Sie ein neues Treffen.</p>\
<h2 lang=\"en\">This page does not exist.</h2>\
<p lang=\"en\">Check the address, or start a new meeting.</p>\
<p><a class=\"button-link\" href=\"/\">Zur Startseite <span lang=\"en\">(start page)</span></a></p>\
</main></body></html>";

/// `GET /`: the client, which offers to start a meeting.
pub async fn landing_page() -> Html<&'static str> {
    Html(INDEX_HTML)
}

/// `GET /{tenant}/{room}`: the client for one room. Names with capitals are redirected to
/// their lower-case form, so that "Skatclub" and "skatclub" meet in the same room.
pub async fn room_page(Path((tenant, room)): Path<(String, String)>) -> Response {
    if RESERVED_TENANT_NAMES.contains(&tenant.as_str()) {
        return not_found().await;
    }
    if TenantName::new(tenant.as_str()).is_ok() && RoomName::new(room.as_str()).is_ok() {
        return Html(INDEX_HTML).into_response();
    }
    let (lower_tenant, lower_room) = (tenant.to_lowercase(), room.to_lowercase());
    if TenantName::new(lower_tenant.as_str()).is_ok() && RoomName::new(lower_room.as_str()).is_ok()
    {
        return Redirect::permanent(&format!("/{lower_tenant}/{lower_room}")).into_response();
    }
    not_found().await
}

/// `GET /{tenant}`: a tenant's own start page, if the tenant exists.
pub async fn tenant_page<S: Store>(
    State(gateway): State<Arc<Gateway<S>>>,
    Path(tenant): Path<String>,
) -> Response {
    match tenant_named(&gateway, &tenant).await {
        Found::Tenant(_) => Html(INDEX_HTML).into_response(),
        Found::Lowercase(lower) => Redirect::permanent(&format!("/{lower}")).into_response(),
        Found::Nothing => not_found().await,
        Found::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// How a tenant's pages look, as the client reads it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TenantLook {
    name: String,
    display_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_color: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logo: Option<String>,
    adhoc_rooms: bool,
}

/// `GET /api/v1/tenants/{tenant}`: the tenant's title, colour and logo, and whether a typed
/// room name opens a new room there.
pub async fn tenant_look<S: Store>(
    State(gateway): State<Arc<Gateway<S>>>,
    Path(tenant): Path<String>,
) -> Response {
    let tenant = match tenant_named(&gateway, &tenant).await {
        Found::Tenant(tenant) => tenant,
        Found::Unavailable => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Found::Lowercase(_) | Found::Nothing => return StatusCode::NOT_FOUND.into_response(),
    };
    let branding = tenant.branding;
    let look = TenantLook {
        name: tenant.name.to_string(),
        display_name: tenant.display_name,
        title: branding.title,
        primary_color: branding.primary_color,
        logo: branding.logo,
        adhoc_rooms: tenant.policy.adhoc_rooms,
    };
    match serde_json::to_string(&look) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            json,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// What a tenant name in a URL names.
enum Found {
    Tenant(Tenant),
    /// Its lower-case form is a tenant's name.
    Lowercase(String),
    Nothing,
    Unavailable,
}

async fn tenant_named<S: Store>(gateway: &Gateway<S>, name: &str) -> Found {
    if RESERVED_TENANT_NAMES.contains(&name) {
        return Found::Nothing;
    }
    let Ok(valid) = TenantName::new(name) else {
        let lower = name.to_lowercase();
        return if lower != name && TenantName::new(lower.as_str()).is_ok() {
            Found::Lowercase(lower)
        } else {
            Found::Nothing
        };
    };
    match gateway.admission.space(&valid).await {
        Ok(Some(tenant)) => Found::Tenant(tenant),
        Ok(None) => Found::Nothing,
        Err(error) => {
            warn!(%error, "cannot read a tenant for its page");
            Found::Unavailable
        }
    }
}

/// Any address that is not a page: says so, in German and English, and leads to the start.
pub async fn not_found() -> Response {
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
