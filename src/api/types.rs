//! Wire types: request bodies as real clients send them, query strings, and a JSON extractor whose
//! every failure is a JSON error.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use crate::runtime::spec::{self, Command, PullPolicy, RuntimeSpec};
use crate::runtime::{ListFilter, Runtime, Status};

/// Body of `POST /start`. Unknown fields are ignored: clients send more than we need.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartRequest {
    #[schema(min_length = 1, max_length = 256, example = "agent-server-0d9f8a6e")]
    pub session_id: String,
    /// An image reference (distribution grammar); absent or empty: the service's default.
    #[serde(default)]
    #[schema(max_length = 512, example = "ghcr.io/openhands/agent-server:1.58.2-python")]
    pub image: Option<String>,
    /// A string runs through a shell, a list runs as given; empty or absent keeps the image's.
    #[serde(default)]
    #[schema(schema_with = command_schema)]
    pub command: Option<Command>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub environment: Option<BTreeMap<String, String>>,
    /// Multiplies the default requests and limits.
    #[serde(default)]
    #[schema(minimum = 0.25, maximum = 64.0)]
    pub resource_factor: Option<f64>,
    #[serde(default)]
    pub runtime_class: Option<String>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub run_as_group: Option<i64>,
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub fs_group: Option<i64>,
    #[serde(default)]
    pub image_pull_policy: Option<String>,
}

impl StartRequest {
    /// Validates the request and fills defaults (`default_image` when no image is named).
    pub fn into_spec(self, default_image: &str) -> Result<RuntimeSpec, ApiError> {
        let image_pull_policy = match self.image_pull_policy.as_deref() {
            None | Some("") => None,
            Some(p) => Some(PullPolicy::parse(p).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "image_pull_policy must be Always, IfNotPresent or Never, got {p:?}"
                ))
            })?),
        };
        let spec = RuntimeSpec {
            session_id: self.session_id,
            image: self
                .image
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| default_image.to_string()),
            command: Command::from_wire(self.command),
            working_dir: self.working_dir.filter(|d| !d.is_empty()),
            environment: self.environment.unwrap_or_default(),
            resource_factor: self.resource_factor.unwrap_or(1.0),
            runtime_class: self.runtime_class.filter(|c| !c.is_empty()),
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
            fs_group: self.fs_group,
            image_pull_policy,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The wire form of [`Command`]: a string, a list of strings, or null.
fn command_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    )
}

/// Body of `/stop`, `/pause` and `/resume`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RuntimeIdRequest {
    #[schema(min_length = 1, max_length = 256)]
    pub runtime_id: String,
}

impl RuntimeIdRequest {
    pub fn validated(self) -> Result<String, ApiError> {
        spec::validate_runtime_id(&self.runtime_id)?;
        Ok(self.runtime_id)
    }
}

/// Answer of `/list`: one page of runtimes, oldest first, and how many match in all.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuntimeList {
    pub runtimes: Vec<Runtime>,
    pub total: usize,
}

/// Answer of `/registry_prefix`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryPrefix {
    pub registry_prefix: String,
}

/// Answer of `/image_exists` when the backend can tell.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageExists {
    pub exists: bool,
    pub image: String,
}

/// Answer of the health endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

impl Health {
    pub fn ok() -> Health {
        Health { status: "ok".into() }
    }
}

/// Largest number of ids one `/sessions/batch` call may ask for.
pub const MAX_BATCH_IDS: usize = 1000;

/// Session ids of `/sessions/batch`: repeated `ids=` parameters, comma lists, or both; in order,
/// without duplicates.
pub fn batch_ids(query: Option<&str>) -> Result<Vec<String>, ApiError> {
    let mut ids: Vec<String> = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if key != "ids" {
            continue;
        }
        for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            spec::validate_session_id(id)?;
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_string());
            }
        }
    }
    if ids.len() > MAX_BATCH_IDS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BATCH_IDS} ids per batch, got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// `/list` query: `status` (`all`, or a comma list of statuses; default: runtimes holding
/// compute), `limit`, `offset`.
#[derive(Debug, PartialEq, Eq)]
pub struct ListQuery {
    pub filter: ListFilter,
    pub limit: Option<usize>,
    pub offset: usize,
}

pub fn list_query(query: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut out = ListQuery { filter: ListFilter::Active, limit: None, offset: 0 };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "status" => {
                out.filter = if value.eq_ignore_ascii_case("all") {
                    ListFilter::All
                } else {
                    let statuses = value
                        .split(',')
                        .map(|s| {
                            Status::parse(s).ok_or_else(|| {
                                ApiError::bad_request(format!(
                                    "unknown status {s:?}: use all, starting, running, paused, stopped or error"
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    ListFilter::Only(statuses)
                }
            }
            "limit" => out.limit = Some(parse_count("limit", &value)?),
            "offset" => out.offset = parse_count("offset", &value)?,
            _ => {}
        }
    }
    Ok(out)
}

fn parse_count(name: &str, value: &str) -> Result<usize, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!("{name} must be a non-negative integer, got {value:?}"))
    })
}

/// A path parameter whose every rejection (invalid percent-encoding, invalid UTF-8) is a JSON 400
/// naming the parameter, rather than axum's plain-text answer.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "invalid path parameter: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// A JSON body whatever its Content-Type, with size, syntax and schema errors as JSON 4xx.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "payload_too_large", "request body is too large")
            } else {
                ApiError::new(status, "bad_request", rejection.body_text())
            }
        })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// A request body as `T`: malformed JSON, a non-object, and a value of the wrong type are each a
/// 400 whose message names the offending field.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    // serde would accept a struct written as an array; a request body is always an object.
    if !value.is_object() {
        return Err(ApiError::bad_request("invalid request body: expected a JSON object"));
    }
    // Through serde_path_to_error: serde's own message for a wrong type omits the field.
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = match e.path().to_string() {
            root if root == "." => String::new(),
            field => format!("{field}: "),
        };
        ApiError::bad_request(format!("invalid request body: {at}{}", e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_accept_repeats_and_commas() {
        let ids = batch_ids(Some("ids=a&ids=B,c&ids=a&other=x")).unwrap();
        assert_eq!(ids, ["a", "B", "c"]);
        assert!(batch_ids(None).unwrap().is_empty());
        let ids = batch_ids(Some("ids=a%2Cb")).unwrap();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn batch_ids_have_a_ceiling() {
        let q = format!(
            "ids={}",
            (0..=MAX_BATCH_IDS).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        assert_eq!(batch_ids(Some(&q)).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn list_query_filters() {
        assert_eq!(list_query(None).unwrap().filter, ListFilter::Active);
        assert_eq!(list_query(Some("status=ALL")).unwrap().filter, ListFilter::All);
        assert_eq!(
            list_query(Some("status=paused,error")).unwrap().filter,
            ListFilter::Only(vec![Status::Paused, Status::Error])
        );
        assert!(list_query(Some("status=nope")).is_err());
        let q = list_query(Some("limit=5&offset=10")).unwrap();
        assert_eq!((q.limit, q.offset), (Some(5), 10));
        assert!(list_query(Some("limit=-1")).is_err());
    }

    #[test]
    fn start_request_defaults_and_validation() {
        let req: StartRequest = serde_json::from_str(r#"{"session_id":"s","unknown":1}"#).unwrap();
        let spec = req.into_spec("img:latest").unwrap();
        assert_eq!(spec.image, "img:latest");
        assert_eq!(spec.resource_factor, 1.0);
        let req: StartRequest = serde_json::from_str(
            r#"{"session_id":"s","image":"i","image_pull_policy":"Sometimes"}"#,
        )
        .unwrap();
        assert!(req.into_spec("d").is_err());
        let req: StartRequest =
            serde_json::from_str(r#"{"session_id":"s","image":"i","resource_factor":0}"#).unwrap();
        assert!(req.into_spec("d").is_err());
    }
}
