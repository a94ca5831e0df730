//! Does an image exist? Asked of its registry through the OCI distribution API: a manifest HEAD,
//! anonymous or with pull-secret credentials, following Basic and Bearer-token challenges.
//! When the registry cannot be asked, the answer is "cannot tell", never a guess.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};

use crate::runtime::ImageCheck;

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// An image reference split into what the distribution API needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Host (and port) of the registry API.
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

/// Parses `[registry/]repository[:tag][@digest]` with Docker's defaults (Docker Hub, `library/`, `latest`).
pub fn parse_image(image: &str) -> Result<ImageRef, String> {
    let image = image.trim();
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{image:?} is not an image reference"));
    }
    let (name, reference) = match image.split_once('@') {
        Some((name, digest)) => (name, digest.to_string()),
        None => {
            let last_slash = image.rfind('/').map_or(0, |i| i + 1);
            match image[last_slash..].rfind(':') {
                Some(i) => (&image[..last_slash + i], image[last_slash + i + 1..].to_string()),
                None => (image, "latest".to_string()),
            }
        }
    };
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let (registry, repository) = if registry == "docker.io" {
        let repo =
            if repository.contains('/') { repository } else { format!("library/{repository}") };
        ("registry-1.docker.io".to_string(), repo)
    } else {
        (registry, repository)
    };
    if repository.is_empty() || reference.is_empty() {
        return Err(format!("{image:?} is not an image reference"));
    }
    Ok(ImageRef { registry, repository, reference })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    // key="value" pairs separated by commas; values may contain commas (scope lists).
    let mut rest = params;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (value, remainder) = if let Some(stripped) = after.strip_prefix('"') {
            let end = stripped.find('"')?;
            (&stripped[..end], &stripped[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        fields.insert(key, value.to_string());
        rest = remainder;
    }
    Some(Challenge::Bearer {
        realm: fields.remove("realm")?,
        service: fields.remove("service"),
        scope: fields.remove("scope"),
    })
}

/// Username and password for one registry host.
pub type Credentials = (String, String);

/// Credentials by registry host from a `.dockerconfigjson` (the pull secret format).
pub fn docker_config_credentials(json: &[u8]) -> HashMap<String, Credentials> {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(json) else {
        return HashMap::new();
    };
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return HashMap::new();
    };
    auths
        .iter()
        .filter_map(|(host, entry)| {
            let host = host.trim_start_matches("https://").trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            let host = if host == "index.docker.io" || host == "docker.io" {
                "registry-1.docker.io"
            } else {
                host
            };
            let creds = match (
                entry.get("username").and_then(|v| v.as_str()),
                entry.get("password").and_then(|v| v.as_str()),
            ) {
                (Some(u), Some(p)) => (u.to_string(), p.to_string()),
                _ => {
                    let auth = entry.get("auth")?.as_str()?;
                    let decoded = base64::engine::general_purpose::STANDARD.decode(auth).ok()?;
                    let (u, p) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
                    (u.to_string(), p.to_string())
                }
            };
            Some((host.to_string(), creds))
        })
        .collect()
}

#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    /// Registries spoken to over plain HTTP (e.g. a registry on loopback in tests).
    insecure: Vec<String>,
}

impl RegistryClient {
    pub fn new(insecure: Vec<String>) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(RegistryClient { http, insecure })
    }

    /// Checks the image's manifest; `credentials` are used only when the registry asks.
    pub async fn check(&self, image: &str, credentials: Option<&Credentials>) -> ImageCheck {
        let image = match parse_image(image) {
            Ok(i) => i,
            Err(e) => return ImageCheck::Unknown(e),
        };
        let scheme = if self.insecure.contains(&image.registry) { "http" } else { "https" };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            image.registry, image.repository, image.reference
        );
        match self.head(&url, None).await {
            Err(e) => ImageCheck::Unknown(e),
            Ok((status, _)) if status.is_success() => ImageCheck::Exists,
            Ok((StatusCode::NOT_FOUND, _)) => ImageCheck::Missing,
            Ok((StatusCode::UNAUTHORIZED, challenge)) => {
                let authorization = match challenge.as_deref().and_then(parse_challenge) {
                    Some(Challenge::Basic) => match credentials {
                        Some((u, p)) => basic(u, p),
                        None => {
                            return ImageCheck::Unknown(format!(
                                "{} requires credentials and no pull secret has them",
                                image.registry
                            ));
                        }
                    },
                    Some(Challenge::Bearer { realm, service, scope }) => {
                        let scope = scope
                            .unwrap_or_else(|| format!("repository:{}:pull", image.repository));
                        match self.token(&realm, service.as_deref(), &scope, credentials).await {
                            Ok(token) => format!("Bearer {token}"),
                            Err(e) => return ImageCheck::Unknown(e),
                        }
                    }
                    None => {
                        return ImageCheck::Unknown(format!(
                            "{} sent an authentication challenge this service does not understand",
                            image.registry
                        ));
                    }
                };
                match self.head(&url, Some(&authorization)).await {
                    Err(e) => ImageCheck::Unknown(e),
                    Ok((status, _)) if status.is_success() => ImageCheck::Exists,
                    Ok((StatusCode::NOT_FOUND, _)) => ImageCheck::Missing,
                    Ok((status, _)) => ImageCheck::Unknown(format!(
                        "{} answered {status} even with credentials: the image may be private or missing",
                        image.registry
                    )),
                }
            }
            Ok((status, _)) => ImageCheck::Unknown(format!("{} answered {status}", image.registry)),
        }
    }

    async fn head(
        &self,
        url: &str,
        authorization: Option<&str>,
    ) -> Result<(StatusCode, Option<String>), String> {
        let mut req = self.http.head(url).header(ACCEPT, MANIFEST_TYPES);
        if let Some(a) = authorization {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let resp = req.send().await.map_err(|e| format!("registry unreachable: {e}"))?;
        let challenge =
            resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(String::from);
        Ok((resp.status(), challenge))
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, String> {
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.http.get(realm).query(&query);
        if let Some((u, p)) = credentials {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| format!("token service unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("token service answered {}", resp.status()));
        }
        let body: serde_json::Value =
            resp.json().await.map_err(|e| format!("token service sent no JSON: {e}"))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .map(String::from)
            .ok_or_else(|| "token service sent no token".to_string())
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(registry: &str, repository: &str, reference: &str) -> ImageRef {
        ImageRef {
            registry: registry.into(),
            repository: repository.into(),
            reference: reference.into(),
        }
    }

    #[test]
    fn parses_references_with_docker_defaults() {
        assert_eq!(
            parse_image("ubuntu").unwrap(),
            r("registry-1.docker.io", "library/ubuntu", "latest")
        );
        assert_eq!(
            parse_image("bitnami/redis:7").unwrap(),
            r("registry-1.docker.io", "bitnami/redis", "7")
        );
        assert_eq!(
            parse_image("ghcr.io/openhands/agent-server:1.58.2-python").unwrap(),
            r("ghcr.io", "openhands/agent-server", "1.58.2-python")
        );
        assert_eq!(
            parse_image("127.0.0.1:5000/oh/agent").unwrap(),
            r("127.0.0.1:5000", "oh/agent", "latest")
        );
        assert_eq!(parse_image("localhost/x:1").unwrap(), r("localhost", "x", "1"));
        assert_eq!(
            parse_image("ghcr.io/a/b@sha256:abc").unwrap(),
            r("ghcr.io", "a/b", "sha256:abc")
        );
        assert!(parse_image("").is_err());
        assert!(parse_image("has space").is_err());
    }

    #[test]
    fn parses_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:a/b:pull,push".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge(r#"Bearer service="x""#),
            None,
            "a bearer challenge needs a realm"
        );
    }

    #[test]
    fn reads_pull_secret_credentials() {
        let json = br#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
            "ghcr.io": {"username": "bot", "password": "tok"}
        }}"#;
        let creds = docker_config_credentials(json);
        assert_eq!(creds["registry-1.docker.io"], ("user".to_string(), "pass".to_string()));
        assert_eq!(creds["ghcr.io"], ("bot".to_string(), "tok".to_string()));
        assert!(docker_config_credentials(b"not json").is_empty());
    }
}
