//! `GET /icons/{id}`: one icon's PNG bytes over HTTP, with an `ETag` (its content hash), so a
//! browser or HTTP client downloads each icon once and afterwards only revalidates
//! (`If-None-Match` → `304`, no body).
//!
//! The icons are the set read from storage before the listeners accept
//! ([`crate::logic::icons::preloaded`]); the same bytes and hashes as `GetIcon` over frames.

use lattice_wire::http::{Request, Response};

use crate::logic::icons;

/// The answer to `GET /icons/{rest}`.
///
/// Cost: a binary search over the icons and one copy of the PNG bytes into the response.
/// Fails as: `404` for an id that is not a decimal `u32` (ASCII digits only) or not a stored icon, `503` when no icon
/// set was loaded (storage could not be read at start).
pub fn get(req: &Request, rest: &str) -> Response {
    let Some(set) = icons::preloaded() else {
        return Response::text(503, "icons are not loaded\n");
    };
    let Some(icon) = lattice_wire::http::parse_digits::<u32>(rest).and_then(|id| set.get(id))
    else {
        return Response::text(404, "no such icon\n");
    };
    let etag = etag(&icon.hash);
    if req
        .headers
        .iter()
        .any(|(k, v)| k == "if-none-match" && matches_etag(v, &etag))
    {
        return Response {
            status: 304,
            headers: vec![
                ("ETag".into(), etag),
                ("Cache-Control".into(), "no-cache".into()),
            ],
            body: Vec::new(),
        };
    }
    // no-cache: a client keeps the bytes but asks again (cheaply, with If-None-Match) before
    // using them, so an icon changed by `lattice tool icons import` and a restart is picked up.
    Response::new(200, "image/png", icon.png.clone())
        .with_header("ETag", &etag)
        .with_header("Cache-Control", "no-cache")
}

/// A strong entity tag from the icon's SHA-256: `"<64 hex digits>"`.
fn etag(hash: &[u8]) -> String {
    let mut s = String::with_capacity(hash.len() * 2 + 2);
    s.push('"');
    for b in hash {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    s
}

/// `If-None-Match`: `*` or a comma-separated list of tags, weak ones (`W/"…"`) compared weakly
/// as RFC 9110 asks for this header.
fn matches_etag(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_quoted_hex_and_if_none_match_lists_compare() {
        let e = etag(&[0x00, 0xab, 0xff]);
        assert_eq!(e, "\"00abff\"");
        assert!(matches_etag("\"00abff\"", &e));
        assert!(matches_etag("\"other\", W/\"00abff\"", &e));
        assert!(matches_etag("*", &e));
        assert!(!matches_etag("\"00abfe\"", &e));
        assert!(
            !matches_etag("00abff", &e),
            "an unquoted tag is not the tag"
        );
    }
}
