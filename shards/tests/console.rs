//! The operations console (`GET /console` on the admin listener) against a real `lattice`
//! process: the page is served to anyone (it holds no data and no secret), and every `/admin/`
//! route its script fetches answers 401 without the token, or with a wrong one, and 200 with it.
//! The page in Chromium is tested by proto/ts-test/live/console.test.ts (tests/clients.sh).

mod common;

use common::*;

/// The `(method, path)` of every `call("METHOD", "PATH"…)` in the page's script: what it fetches.
fn fetched_routes(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("call(\"") {
        rest = &rest[i + "call(\"".len()..];
        let Some((method, tail)) = rest.split_once("\", \"") else {
            continue;
        };
        let Some(end) = tail.find('"') else { continue };
        let path = &tail[..end];
        out.push((method.to_string(), path.to_string()));
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn console_page_is_served_and_its_data_routes_need_the_token() {
    let l = Lattice::start(&["--admin.token", "console-test-token"]);
    let (status, head, body) = http_exchange(
        l.admin,
        b"GET /console HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    let page = String::from_utf8(body).expect("the page is UTF-8");
    assert_eq!(page, lattice_server::admin::console::CONSOLE_HTML);
    assert!(
        !page.contains("console-test-token"),
        "the page never carries the token"
    );

    let routes = fetched_routes(&page);
    let paths: Vec<&str> = routes.iter().map(|(_, p)| p.as_str()).collect();
    // What the page is for: metrics, the session list, closing, the IP rules.
    for needed in [
        "/metrics",
        "/admin/sessions?limit=",
        "/admin/close",
        "/admin/ip-rules",
    ] {
        assert!(
            paths.contains(&needed),
            "the page fetches {needed}: {routes:?}"
        );
    }
    for (method, path) in &routes {
        // The session list's limit is appended by the script.
        let path = if path.ends_with('=') {
            format!("{path}200")
        } else {
            path.clone()
        };
        let body = if method == "GET" { "" } else { "{}" };
        if path == "/metrics" {
            // Open to scrapers by design; the page sends the token anyway.
            assert_eq!(l.admin_raw(method, &path, None, body).0, 200);
            continue;
        }
        assert!(path.starts_with("/admin/"), "{method} {path} is guarded");
        let (status, text) = l.admin_raw(method, &path, None, body);
        assert_eq!(status, 401, "{method} {path} without a token: {text}");
        assert!(text.contains("missing Authorization"), "{text}");
        let (status, text) = l.admin_raw(method, &path, Some("console-test-tokex"), body);
        assert_eq!(status, 401, "{method} {path} with a wrong token: {text}");
        assert!(text.contains("wrong bearer token"), "{text}");
    }
    // With the token, the reads the page makes on every poll answer.
    let (status, text) = l.admin_raw(
        "GET",
        "/admin/sessions?limit=200",
        Some("console-test-token"),
        "",
    );
    assert_eq!(status, 200, "{text}");
    let (status, text) = l.admin_raw("GET", "/admin/ip-rules", Some("console-test-token"), "");
    assert_eq!(status, 200, "{text}");
    // The console is read-only as a route.
    assert_eq!(l.admin_raw("POST", "/console", None, "").0, 405);
}

/// The page's address parameters (`?list=`, `?every=`, `?points=`) as its script reads them, run
/// by Node (deploy/test.sh installs it) on the script's own `param` function.
#[test]
fn console_address_parameters_are_rounded_and_clamped() {
    let page = lattice_server::admin::console::CONSOLE_HTML;
    let start = page.find("const param = ").expect("the page defines param");
    let end = start
        + page[start..]
            .find("const EVERY")
            .expect("param is followed by EVERY");
    let param = &page[start..end];
    // (query, lo, hi, default) -> what the page uses.
    let cases = [
        ("?list=1.5", 1, 10000, 200, 2),
        ("?list=0", 1, 10000, 200, 1),
        ("?list=-3", 1, 10000, 200, 1),
        ("?list=99999", 1, 10000, 200, 10000),
        ("?list=", 1, 10000, 200, 200),
        ("?list=abc", 1, 10000, 200, 200),
        ("", 1, 10000, 200, 200),
        ("?list=7", 1, 10000, 200, 7),
        ("?every=750.5", 500, 60000, 2000, 751),
        ("?every=1", 500, 60000, 2000, 500),
    ];
    let mut script = String::from("const location = { search: '' };\n");
    script.push_str(&param.replace("const param", "let param"));
    script.push_str("\nconst out = [];\n");
    for (q, lo, hi, dflt, _) in cases {
        script.push_str(&format!(
            "location.search = {q:?}; out.push(param({:?}, {lo}, {hi}, {dflt}));\n",
            q.trim_start_matches('?')
                .split('=')
                .next()
                .unwrap_or("list")
        ));
    }
    script.push_str("console.log(JSON.stringify(out));\n");
    let out = std::process::Command::new("node")
        .args(["-e", &script])
        .output()
        .expect("node is required (deploy/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<i64> = serde_json::from_slice(&out.stdout).unwrap();
    let want: Vec<i64> = cases.iter().map(|c| c.4).collect();
    assert_eq!(got, want, "{cases:?}");
}
