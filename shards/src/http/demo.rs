//! The demo page (`GET /`) and the client it runs (`GET /lattice.js`), compiled into the binary.
//!
//! `lattice.js` is the generated TypeScript client (`proto/ts/`) with protobufjs/minimal and
//! fflate, bundled by esbuild (version pinned in `proto/ts-test/package-lock.json`, entry
//! `proto/ts-test/demo/entry.ts`, `npm run bundle`) into one minified IIFE defining the global
//! `Lattice`, and committed. Nothing is built at run time; `deploy/ci/ts.sh` rebuilds the bundle
//! and fails when it differs from the committed file, so the served client is always the
//! generated one.

use lattice_wire::http::Response;

/// The page.
pub const INDEX_HTML: &str = include_str!("demo/index.html");
/// The bundled client.
pub const LATTICE_JS: &str = include_str!("demo/lattice.js");

/// `GET /`.
pub fn page() -> Response {
    Response::new(200, "text/html; charset=utf-8", INDEX_HTML)
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
        assert_eq!(page().status, 200);
    }
}
