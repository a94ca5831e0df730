//! The headers a forwarded request and response carry. Pure: hop-by-hop headers go (RFC 9110
//! 7.6.1), an upgrade keeps only `Connection: upgrade` and its `Upgrade`, the service's API key
//! never leaves, and `X-Forwarded-*` say where the request came from.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers, plus the legacy proxy ones.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a request (or response) asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_tokens(headers).any(|t| t == "upgrade")
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and those `Connection` names; keeps an upgrade's pair if asked.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let upgrade = keep_upgrade.then(|| headers.get(header::UPGRADE).cloned()).flatten();
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// The headers sent to the sandbox. `api_key` is the service's own key: any header carrying it
/// (not only `X-API-Key`) is dropped, as is `X-API-Key` itself.
pub fn upstream_request(
    incoming: &HeaderMap,
    client: Option<IpAddr>,
    api_key: &[u8],
    upgrade: bool,
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers, upgrade);
    headers.remove("x-api-key");
    let carrying_key: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| contains(v.as_bytes(), api_key))
        .map(|(n, _)| n.clone())
        .collect();
    for name in carrying_key {
        headers.remove(name);
    }
    if let Some(ip) = client {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if let Some(host) = incoming.get(header::HOST) {
        headers.insert("x-forwarded-host", host.clone());
    }
    headers
}

/// The headers sent back to the client: hop-by-hop ones removed, an accepted upgrade's kept.
pub fn downstream_response(upstream: &HeaderMap, switching_protocols: bool) -> HeaderMap {
    let mut headers = upstream.clone();
    strip_hop_by_hop(&mut headers, switching_protocols);
    headers
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap())
            })
            .collect()
    }

    #[test]
    fn hop_by_hop_and_the_api_key_never_reach_the_sandbox() {
        let incoming = map(&[
            ("host", "abc.sb.example.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-api-key", "service-key"),
            ("authorization", "Bearer service-key"),
            ("x-session-api-key", "sandbox-key"),
            ("x-forwarded-for", "10.0.0.1"),
        ]);
        let out =
            upstream_request(&incoming, Some("127.0.0.1".parse().unwrap()), b"service-key", false);
        for gone in [
            "connection",
            "x-secret-hop",
            "keep-alive",
            "te",
            "transfer-encoding",
            "x-api-key",
            "authorization",
            "upgrade",
        ] {
            assert!(!out.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(out["x-session-api-key"], "sandbox-key");
        assert_eq!(out["host"], "abc.sb.example.com");
        assert_eq!(out["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "abc.sb.example.com");
    }

    #[test]
    fn an_upgrade_keeps_exactly_its_pair() {
        let incoming = map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
            ("x-forwarded-proto", "https"),
        ]);
        assert!(is_upgrade(&incoming));
        let out = upstream_request(&incoming, None, b"key", true);
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-key"], "k");
        assert_eq!(out["x-forwarded-proto"], "https");
        let plain = upstream_request(&incoming, None, b"key", false);
        assert!(!plain.contains_key("upgrade") && !plain.contains_key("connection"));
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        let response =
            map(&[("connection", "upgrade"), ("upgrade", "websocket"), ("keep-alive", "x")]);
        assert_eq!(downstream_response(&response, true)["upgrade"], "websocket");
        assert!(!downstream_response(&response, false).contains_key("upgrade"));
        assert!(!downstream_response(&response, true).contains_key("keep-alive"));
    }
}
