//! Properties of the request door, over generated inputs: a `/start` body through JSON parsing
//! and validation, session ids, image references, environment maps, `resource_factor`, uid/gid
//! ranges, and the `/sessions/batch` and `/list` query parsers. Each property says what the
//! contract promises: nothing panics, a rejection is a 400 naming the offending field, and what is
//! accepted satisfies the documented rules and arrives unchanged. Bounded cases, so the normal
//! `cargo test --lib` runs them in seconds.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::error::ApiError;
use super::types::{MAX_BATCH_IDS, StartRequest, batch_ids, list_query, parse_body};
use crate::runtime::RuntimeSpec;
use crate::runtime::spec::{
    self, Command, MAX_ENV_VARS, MAX_ID, MAX_RESOURCE_FACTOR, MAX_SESSION_ID_LEN,
    MIN_RESOURCE_FACTOR,
};

fn config() -> ProptestConfig {
    // No regression files in the source tree; failures print the minimal input instead.
    ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any JSON value, a few levels deep, with awkward strings (controls, NUL, non-ASCII).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        "[\\x00-\\x1f a-zA-Z0-9:/._-]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[A-Za-z_]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_body() -> Value {
    json!({"session_id": "s-1", "image": "ghcr.io/openhands/agent-server:1.0"})
}

/// The whole door of `/start`: body bytes to a validated spec.
fn door(body: &Value) -> Result<RuntimeSpec, ApiError> {
    let bytes = serde_json::to_vec(body).unwrap();
    parse_body::<StartRequest>(&bytes)?.into_spec("ghcr.io/openhands/agent-server:default")
}

fn rejected_naming(
    result: Result<RuntimeSpec, ApiError>,
    field: &str,
) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert_eq!(e.status.as_u16(), 400);
        prop_assert!(e.message.contains(field), "{:?} does not name {}", e.message, field);
    }
    Ok(())
}

const FIELDS: [&str; 11] = [
    "session_id",
    "image",
    "command",
    "working_dir",
    "environment",
    "resource_factor",
    "runtime_class",
    "run_as_user",
    "run_as_group",
    "fs_group",
    "image_pull_policy",
];

/// Rules of the contract an accepted spec satisfies, whatever was sent.
fn satisfies_documented_rules(spec: &RuntimeSpec) -> Result<(), TestCaseError> {
    prop_assert!(!spec.session_id.trim().is_empty());
    prop_assert!(spec.session_id.len() <= MAX_SESSION_ID_LEN);
    prop_assert!(!spec.session_id.chars().any(char::is_control));
    prop_assert!(spec.image.trim() == spec.image && !spec.image.is_empty());
    prop_assert!((MIN_RESOURCE_FACTOR..=MAX_RESOURCE_FACTOR).contains(&spec.resource_factor));
    for id in [spec.run_as_user, spec.run_as_group, spec.fs_group].into_iter().flatten() {
        prop_assert!((0..=MAX_ID).contains(&id));
    }
    prop_assert!(spec.environment.len() <= MAX_ENV_VARS);
    for (k, v) in &spec.environment {
        prop_assert!(!k.starts_with("LD_") && !v.contains('\0'));
        prop_assert!(k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'), "{:?}", k);
    }
    // Nothing that reaches an exec(2) or a container spec may hold a NUL byte.
    let nul = match &spec.command {
        Command::ImageDefault => false,
        Command::Shell(line) => line.contains('\0'),
        Command::Exec(args) => args.iter().any(|a| a.contains('\0')),
    };
    prop_assert!(!nul, "a command with a NUL byte was accepted: {:?}", spec.command);
    prop_assert!(!spec.working_dir.as_deref().unwrap_or_default().contains('\0'));
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// One field of an otherwise valid body replaced by anything: no panic; a rejection is a 400
    /// that names that field; an acceptance satisfies the documented rules.
    #[test]
    fn a_start_body_with_any_one_field_is_accepted_validly_or_rejected_naming_it(
        field in prop::sample::select(FIELDS.to_vec()),
        value in any_json(),
    ) {
        let mut body = valid_body();
        body[field] = value;
        let result = door(&body);
        if let Ok(spec) = &result {
            satisfies_documented_rules(spec)?;
        }
        rejected_naming(result, field)?;
    }

    /// Arbitrary bytes as a body: a 400, or a valid spec; never a panic.
    #[test]
    fn any_bytes_as_a_start_body_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        match parse_body::<StartRequest>(&bytes) {
            Ok(req) => if let Ok(spec) = req.into_spec("img:latest") { satisfies_documented_rules(&spec)? },
            Err(e) => prop_assert_eq!(e.status.as_u16(), 400),
        }
    }

    /// Session ids: accepted exactly when not blank, short enough and free of control
    /// characters, and then kept byte for byte (ids are case-sensitive).
    #[test]
    fn session_ids_follow_the_documented_rule_and_round_trip(id in "\\PC{0,8}|[\\x00-\\x1f \\t]{0,4}|.{250,260}") {
        let expected = !id.trim().is_empty() && id.len() <= MAX_SESSION_ID_LEN && !id.chars().any(char::is_control);
        let mut body = valid_body();
        body["session_id"] = json!(id);
        let result = door(&body);
        prop_assert_eq!(result.is_ok(), expected, "{:?}: {:?}", id, result);
        match result {
            Ok(spec) => prop_assert_eq!(spec.session_id, id),
            Err(e) => prop_assert!(e.message.contains("session_id")),
        }
    }

    /// Image references built by the distribution grammar are accepted as sent; the same with
    /// an upper-case repository, a space or an empty tag are rejected naming `image`.
    #[test]
    fn image_references_follow_the_distribution_grammar(
        domain in prop::option::of("[a-z0-9]{1,8}(\\.[a-z0-9]{1,6}){0,2}(:[1-9][0-9]{0,4})?"),
        path in prop::collection::vec("[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?", 1..4),
        tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        spoil in 0..4usize,
    ) {
        let mut image = path.join("/");
        if let Some(domain) = &domain {
            // A first component is a domain only with a dot, a port or "localhost".
            if domain.contains('.') || domain.contains(':') {
                image = format!("{domain}/{image}");
            }
        }
        if let Some(tag) = &tag {
            image = format!("{image}:{tag}");
        }
        let mut body = valid_body();
        body["image"] = json!(image);
        let accepted = door(&body);
        prop_assert!(accepted.is_ok(), "{:?}: {:?}", image, accepted);
        prop_assert_eq!(accepted.unwrap().image, image.clone());

        // Upper case in the last path component (an upper-case first one would be a domain).
        let last = path.last().unwrap();
        let spoiled = match spoil {
            0 if last.chars().any(|c| c.is_ascii_lowercase()) => {
                let mut upper = path.clone();
                *upper.last_mut().unwrap() = last.to_uppercase();
                upper.join("/")
            }
            0 | 1 => format!(" {image}"),
            2 => format!("{image} x"),
            _ => format!("{}:", image.rsplit_once(':').map_or(image.as_str(), |(r, t)| if t.contains('/') { image.as_str() } else { r })),
        };
        body["image"] = json!(spoiled);
        let result = door(&body);
        prop_assert!(result.is_err(), "{:?} was accepted", spoiled);
        rejected_naming(result, "image")?;
    }

    /// Environment maps: accepted exactly when every name is valid and no value holds a NUL,
    /// and then passed on unchanged; a rejection names the environment.
    #[test]
    fn environment_maps_follow_the_documented_rule_and_round_trip(
        env in prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_.-]{0,10}|LD_[A-Z]{1,6}|[0-9 =$][A-Z]{0,3}|", "\\PC{0,8}|[a-z\\x00]{0,3}", 0..6),
    ) {
        let name_ok = |k: &str| {
            k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                && !k.starts_with("LD_")
        };
        let expected = env.iter().all(|(k, v)| name_ok(k) && !v.contains('\0'));
        let mut body = valid_body();
        body["environment"] = json!(env);
        let result = door(&body);
        prop_assert_eq!(result.is_ok(), expected, "{:?}: {:?}", env, result);
        match result {
            Ok(spec) => prop_assert_eq!(spec.environment, env),
            Err(e) => prop_assert!(e.message.contains("environment"), "{}", e.message),
        }
    }

    /// `resource_factor`: accepted exactly within the documented bounds.
    #[test]
    fn resource_factor_is_bounded(factor in prop_oneof![any::<f64>(), 0.0..80.0f64]) {
        prop_assume!(factor.is_finite());
        let mut body = valid_body();
        body["resource_factor"] = json!(factor);
        let result = door(&body);
        prop_assert_eq!(result.is_ok(), (MIN_RESOURCE_FACTOR..=MAX_RESOURCE_FACTOR).contains(&factor));
        rejected_naming(result, "resource_factor")?;
    }

    /// uid, gid and fsGroup: accepted exactly within 0..=2^31-1 (what Kubernetes accepts).
    #[test]
    fn user_and_group_ids_are_within_int32(
        field in prop::sample::select(vec!["run_as_user", "run_as_group", "fs_group"]),
        id in prop_oneof![any::<i64>(), -2i64..=2, (MAX_ID - 2)..=(MAX_ID + 2)],
    ) {
        let mut body = valid_body();
        body[field] = json!(id);
        let result = door(&body);
        prop_assert_eq!(result.is_ok(), (0..=MAX_ID).contains(&id), "{} = {}", field, id);
        rejected_naming(result, field)?;
    }

    /// `/sessions/batch`: repeated `ids=` and comma lists, however encoded, give the distinct
    /// trimmed ids in order of first appearance.
    #[test]
    fn batch_ids_are_the_distinct_ids_in_order(
        groups in prop::collection::vec(prop::collection::vec("[A-Za-z0-9 _.:-]{0,6}", 0..4), 0..5),
    ) {
        let query: String = groups
            .iter()
            .map(|g| url::form_urlencoded::Serializer::new(String::new()).append_pair("ids", &g.join(",")).finish())
            .collect::<Vec<_>>()
            .join("&");
        let mut expected: Vec<String> = Vec::new();
        for id in groups.iter().flatten().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if !expected.iter().any(|e| e == id) {
                expected.push(id.to_string());
            }
        }
        prop_assert_eq!(batch_ids(Some(&query)).unwrap(), expected);
    }

    /// Any query string: the batch and list parsers answer or reject with a 400, never panic; a
    /// rejection names the parameter.
    #[test]
    fn query_parsers_never_panic(query in "[a-z=&,%0-9A-F+ \\x00-\\x1f]{0,40}|(ids=[a-z]{1,2},?){0,8}") {
        match batch_ids(Some(&query)) {
            Ok(ids) => prop_assert!(ids.len() <= MAX_BATCH_IDS && ids.iter().all(|i| spec::validate_session_id(i).is_ok())),
            Err(e) => prop_assert!(e.status.as_u16() == 400 && (e.message.contains("session_id") || e.message.contains("ids"))),
        }
        if let Err(e) = list_query(Some(&query)) {
            prop_assert_eq!(e.status.as_u16(), 400);
            prop_assert!(["status", "limit", "offset"].iter().any(|p| e.message.contains(p)), "{}", e.message);
        }
    }
}

#[test]
fn a_type_error_in_a_body_names_the_field() {
    let body = json!({"session_id": "s", "environment": {"A": 1}});
    let e = door(&body).unwrap_err();
    assert!(e.message.contains("environment"), "{}", e.message);
    let e = door(&json!({"session_id": 5})).unwrap_err();
    assert!(e.message.contains("session_id"), "{}", e.message);
}

#[test]
fn a_shell_command_with_a_nul_byte_is_rejected() {
    let mut body = valid_body();
    body["command"] = json!("run\u{0}me");
    let e = door(&body).unwrap_err();
    assert!(e.message.contains("command"), "{}", e.message);
}
