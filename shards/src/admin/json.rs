//! JSON bodies and answers of the operator API.

use lattice_runtime::control::AskError;
use lattice_runtime::telemetry::admin::{Request, Response};
use serde_json::{json, Value};

/// A 200 answer with `v`.
pub fn ok(v: Value) -> Response {
    Response::json(200, format!("{v:#}\n"))
}

/// An error answer with `{"error": why}` ([`Response::error`], the shape of every admin error).
pub fn error(status: u16, why: impl std::fmt::Display) -> Response {
    Response::error(status, &why.to_string())
}

/// The request body as JSON (an empty body is `{}`); a 400 answer when it is not.
pub fn body(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    crate::strict_json::no_duplicate_keys(&req.body)
        .map_err(|e| error(400, format!("body is not JSON: {e}")))?;
    let v: Value = serde_json::from_slice(&req.body)
        .map_err(|e| error(400, format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(error(400, "body must be a JSON object"));
    }
    Ok(v)
}

/// As [`body`] for routes that replace state: an empty body is refused too (send `{}` to mean
/// every field at its default).
pub fn body_required(req: &Request) -> Result<Value, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            400,
            "empty body: send a JSON object (`{}` for every field at its default)",
        ));
    }
    body(req)
}

/// A shard that gave no answer, for the `errors` list of an answer.
pub fn shard_error(shard: usize, e: &AskError) -> Value {
    json!({ "shard": shard, "error": e.to_string() })
}

/// Percent-decodes a query value (`%2F` → `/`, `+` stays `+`); `None` on a bad escape.
pub fn unescape(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(unescape("10.0.0.0%2F8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(unescape("%3A%3A1").as_deref(), Some("::1"));
        assert_eq!(unescape("bad%2"), None);
        assert_eq!(unescape("bad%zz"), None);
    }
}
