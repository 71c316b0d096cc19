//! The nginx site of a host's `[proxy]`: one server block, one `location` per route, each
//! proxied to the host port the routed service publishes (nginx runs on the host, so it reaches
//! containers only through published ports).

use std::cmp::Reverse;
use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::{published_port, service};
use crate::model::{Host, Model, ProxyRoute};

/// Where the site goes on the host: `conf.d` is included by the stock nginx.conf of Debian,
/// Ubuntu and nginx.org's packages, and needs no symlink in sites-enabled.
pub fn path(host: &str) -> String {
    format!("/etc/nginx/conf.d/xtask-{host}.conf")
}

/// The server block for the host's proxy, or `None` when it has no `[proxy]`.
pub fn site(model: &Model, host: &Host) -> Result<Option<String>> {
    let Some(proxy) = &host.spec.proxy else {
        return Ok(None);
    };
    let mut out = format!(
        "# nginx site of host `{0}`, rendered by `cargo xtask` from hosts/{0}.toml.\n\
         # Do not edit: `cargo xtask up {0}` rewrites it.\n\
         server {{\n    listen {1};\n    server_name {2};\n",
        host.name,
        proxy.listen,
        server_names(&proxy.server_name)
    );
    for route in ordered(&proxy.routes)? {
        out.push('\n');
        out.push_str(&location(model, route)?);
    }
    out.push_str("}\n");
    Ok(Some(out))
}

/// Longest path first. nginx picks the longest matching prefix whatever the order; the order
/// is for the reader, and fixed so the file's hash only changes when a route does.
fn ordered(routes: &[ProxyRoute]) -> Result<Vec<&ProxyRoute>> {
    let mut seen = BTreeSet::new();
    for r in routes {
        if !seen.insert(r.path.as_str()) {
            bail!("two proxy routes for path `{}`", r.path);
        }
    }
    let mut v: Vec<&ProxyRoute> = routes.iter().collect();
    v.sort_by_key(|r| (Reverse(r.path.len()), r.path.as_str()));
    Ok(v)
}

fn location(model: &Model, route: &ProxyRoute) -> Result<String> {
    let s = service(model, &route.service)?;
    let port = published_port(s, route.port).with_context(|| {
        format!(
            "route `{}` goes to port {} of `{}`, which it does not publish on the host",
            route.path, route.port, route.service
        )
    })?;
    Ok(format!(
        "    # {service}, container port {cport}\n\
         \x20   location {path} {{\n\
         \x20       proxy_pass http://127.0.0.1:{port};\n\
         \x20       proxy_http_version 1.1;\n\
         \x20       proxy_set_header Host $host;\n\
         \x20       proxy_set_header X-Real-IP $remote_addr;\n\
         \x20       proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20       proxy_set_header X-Forwarded-Proto $scheme;\n\
         \x20   }}\n",
        service = s.name,
        cport = route.port,
        path = token(&route.path),
    ))
}

/// `server_name` takes several names separated by spaces: each is its own token.
fn server_names(names: &str) -> String {
    let v: Vec<String> = names.split_whitespace().map(token).collect();
    if v.is_empty() {
        "_".to_string()
    } else {
        v.join(" ")
    }
}

/// One nginx token: bare when it holds only characters nginx reads literally, else a double
/// quoted string (nginx unescapes `\"` and `\\` in it), so `;`, `{`, `#` or a space in a value
/// cannot end the directive, open a block or start a comment.
fn token(s: &str) -> String {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:*".contains(&b));
    if bare {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const API: &str = r#"
name = "api"
description = "d"
status = "active"
kind = "container"
[run]
ports = [{ container = 5000, host = 15000 }, { container = 9000 }]
"#;
    const WEB: &str = r#"
name = "web"
description = "d"
status = "active"
kind = "container"
[run]
ports = [{ container = 3000, host = 3000 }]
"#;

    fn box_with(proxy: &str) -> String {
        format!(
            "name = \"box\"\ndescription = \"d\"\nreach = \"local\"\nservices = [\"api\", \"web\"]\n{proxy}"
        )
    }

    #[test]
    fn fixture_testbox_proxies_to_the_published_port() {
        let m = fixture();
        let site = site(&m, host(&m, "testbox")).unwrap().unwrap();
        assert!(site.contains("    listen 8081;\n"), "{site}");
        assert!(site.contains("    server_name testbox;\n"), "{site}");
        // notes-api publishes container port 8080 as 18080.
        assert!(
            site.contains("    location / {\n        proxy_pass http://127.0.0.1:18080;\n"),
            "{site}"
        );
        assert!(site.contains("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"));
        assert!(site.ends_with("}\n"));
    }

    #[test]
    fn host_without_proxy_has_no_site() {
        let m = fixture();
        assert!(site(&m, host(&m, "local")).unwrap().is_none());
    }

    #[test]
    fn longest_path_first() {
        let h = box_with(
            "[proxy]\nroutes = [\n{ path = \"/\", service = \"web\", port = 3000 },\n\
             { path = \"/api\", service = \"api\", port = 5000 },\n\
             { path = \"/api/v2\", service = \"api\", port = 5000 },\n]\n",
        );
        let m = inline(&[API, WEB], &[&h]);
        let site = site(&m, host(&m, "box")).unwrap().unwrap();
        let at = |p: &str| site.find(&format!("location {p} {{")).unwrap();
        assert!(at("/api/v2") < at("/api") && at("/api") < at("/"), "{site}");
        assert!(
            site.contains("proxy_pass http://127.0.0.1:15000;"),
            "{site}"
        );
        assert!(site.contains("proxy_pass http://127.0.0.1:3000;"), "{site}");
        // Defaults: port 80, catch-all server name.
        assert!(site.contains("listen 80;\n    server_name _;\n"), "{site}");
    }

    #[test]
    fn unpublished_route_port_is_an_error() {
        let h = box_with("[proxy]\nroutes = [{ path = \"/\", service = \"api\", port = 9000 }]\n");
        let m = inline(&[API, WEB], &[&h]);
        let err = site(&m, host(&m, "box")).unwrap_err().to_string();
        assert!(err.contains("does not publish"), "{err}");
    }

    #[test]
    fn duplicate_paths_are_an_error() {
        let h = box_with(
            "[proxy]\nroutes = [{ path = \"/\", service = \"api\", port = 5000 }, \
             { path = \"/\", service = \"web\", port = 3000 }]\n",
        );
        let m = inline(&[API, WEB], &[&h]);
        assert!(site(&m, host(&m, "box")).is_err());
    }

    #[test]
    fn hostile_paths_and_names_stay_one_token() {
        // The validator rejects these paths; the renderer still cannot be broken out of.
        let h = box_with(
            "[proxy]\nserver_name = 'a.example b;evil'\n\
             routes = [{ path = '/x; } server { listen 1; location /\"\\ #', service = \"api\", port = 5000 }]\n",
        );
        let m = inline(&[API, WEB], &[&h]);
        let site = site(&m, host(&m, "box")).unwrap().unwrap();
        assert!(
            site.contains("    server_name a.example \"b;evil\";\n"),
            "{site}"
        );
        assert!(
            site.contains(r#"    location "/x; } server { listen 1; location /\"\\ #" {"#),
            "{site}"
        );
        assert_eq!(token("/api/v1.2_x-y"), "/api/v1.2_x-y");
        assert_eq!(token(""), "\"\"");
    }

    #[test]
    fn repo_homelab_routes_api_and_dashboard() {
        let m = repo();
        let site = site(&m, host(&m, "homelab")).unwrap().unwrap();
        assert!(site.contains("server_name hamnet-mgmt.local;"), "{site}");
        assert!(
            site.contains("location /api {\n        proxy_pass http://127.0.0.1:5000;"),
            "{site}"
        );
        assert!(
            site.contains("location / {\n        proxy_pass http://127.0.0.1:3000;"),
            "{site}"
        );
    }
}
