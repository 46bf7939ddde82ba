//! `GET /console`: the operations console, one static HTML page with inline JS and CSS
//! (`console.html`, compiled in with `include_str!`).
//!
//! The page itself holds no secret and no data, so it is served without the token; it asks the
//! operator for the admin token once, keeps it in the tab's `sessionStorage`, and sends it as
//! `Authorization: Bearer` on every fetch of `/admin/…` and `/metrics`. Every piece of data it
//! shows comes from those guarded routes (a wrong or missing token gets their 401, which the page
//! shows and then asks again). Serving costs one copy of ~19 KB per request; nothing can fail.
//!
//! The response forbids inline content from anywhere but the page (`Content-Security-Policy`:
//! scripts and styles inline only, fetches to this origin only, no frames), so the page runs with
//! no network beyond the admin listener.

use lattice_runtime::telemetry::admin::{Response, Routes};

/// The page (HTML with inline script and style; no external resources).
pub const CONSOLE_HTML: &str = include_str!("console.html");

/// The Content-Security-Policy of the page: nothing loads from elsewhere, nothing frames it.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Registers `GET /console`.
pub fn register(r: &mut Routes) {
    r.add(
        "GET",
        "/console",
        Box::new(|_| {
            let mut resp = Response::new(200, "text/html; charset=utf-8", CONSOLE_HTML);
            resp.headers.extend(
                [
                    ("Content-Security-Policy", CSP),
                    ("Cache-Control", "no-store"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "no-referrer"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            resp
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_nothing_from_elsewhere_and_holds_no_token() {
        // No external script, style, image or font: no network here, and no CDN in production.
        for needle in ["src=\"http", "href=\"http", "//cdn", "@import", "url(http"] {
            assert!(
                !CONSOLE_HTML.contains(needle),
                "console.html contains {needle:?}"
            );
        }
        // The token lives only in sessionStorage and in the Authorization header it sends.
        assert!(CONSOLE_HTML.contains("sessionStorage"));
        assert!(CONSOLE_HTML.contains("Authorization"));
        assert!(!CONSOLE_HTML.contains("localStorage"));
    }
}
