//! The demo page (`GET /`) and the client it runs (`GET /lattice.js`), compiled into the binary.
//!
//! `lattice.js` is the generated TypeScript client (`proto/ts/`) with protobufjs/minimal and
//! fflate, bundled by esbuild (version pinned in `proto/ts-test/package-lock.json`, entry
//! `proto/ts-test/demo/entry.ts`, `npm run bundle`) into one minified IIFE defining the global
//! `Lattice`, and committed. Nothing is built at run time; `deploy/ci/ts.sh` rebuilds the bundle
//! and fails when it differs from the committed file, so the served client is always the
//! generated one.

use lattice_wire::http::Response;

use crate::text::html_escape;

/// The page.
pub const INDEX_HTML: &str = include_str!("demo/index.html");
/// The bundled client.
pub const LATTICE_JS: &str = include_str!("demo/lattice.js");

/// The page for a server whose WebSocket path is `ws_path` (`http.ws_path`): made once per
/// shard. The path goes into the script as a JSON string (`<` escaped, so it cannot end the
/// script) and into the text HTML-escaped.
pub fn page_for(ws_path: &str) -> String {
    let js = serde_json::to_string(ws_path)
        .expect("a string")
        .replace('<', "\\u003c");
    let text = html_escape(ws_path);
    INDEX_HTML
        .replacen(
            "const WS_PATH = \"/ws\";",
            &format!("const WS_PATH = {js};"),
            1,
        )
        .replacen("WS_PATH_TEXT", &text, 1)
}

/// `GET /`: `html` from [`page_for`].
pub fn page(html: &str) -> Response {
    Response::new(200, "text/html; charset=utf-8", html.to_owned())
        .with_header("Cache-Control", "no-cache")
}

/// `GET /lattice.js`.
pub fn script() -> Response {
    Response::new(200, "text/javascript; charset=utf-8", LATTICE_JS)
        .with_header("Cache-Control", "no-cache")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_the_bundle_which_defines_the_client() {
        assert!(INDEX_HTML.contains(r#"<script src="/lattice.js"></script>"#));
        assert!(INDEX_HTML.contains("new Lattice.LatticeClient("));
        assert!(
            LATTICE_JS.starts_with("\"use strict\";var Lattice=("),
            "an IIFE defining the global Lattice"
        );
        assert!(LATTICE_JS.contains("LatticeClient"));
        assert!(
            LATTICE_JS.contains(&lattice_proto::version::PROTOCOL.to_string()),
            "built from the current protocol version"
        );
        assert_eq!(page(&page_for("/ws")).status, 200);
    }

    #[test]
    fn the_page_connects_to_the_configured_path() {
        let html = page_for("/game");
        assert!(html.contains(r#"const WS_PATH = "/game";"#), "{html}");
        assert!(html.contains("<code>/game</code>"));
        assert!(!html.contains("WS_PATH_TEXT"));
        let odd = page_for("/a</script>\"`");
        assert!(!odd.contains("/a</script>"), "{odd}");
        assert!(
            odd.contains(r#"const WS_PATH = "/a\u003c/script>\"`";"#),
            "{odd}"
        );
    }
}
