//! The only code that sends requests to the API server: creates, patches and deletes (each one
//! counted in `runtime_api_kube_requests_total`), Events, and the two reads that cannot come from
//! the cache (the orphan sweep's lists of uncached kinds, counted too; pull secrets for
//! `/image_exists`).
//! Kubernetes failures become [`BackendError`]s here and nowhere else.

use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::cached::{CachedRecord, Meta};
use super::record::{managed_selector, runtime_selector};
use crate::runtime::{BackendError, BackendResult};
use crate::telemetry::Metrics;

/// Objects per page of the sweep's lists (client-go's default).
const LIST_PAGE_SIZE: u32 = 500;

/// A page of the list of every object this service manages: the first, or the one `token`
/// (the previous page's continue token) points at.
fn managed_page(token: Option<String>) -> ListParams {
    let params = ListParams::default().labels(&managed_selector(None)).limit(LIST_PAGE_SIZE);
    match token {
        Some(token) => params.continue_token(&token),
        None => params,
    }
}

/// Every item of a paged list: `fetch` gets each page's continue token (none for the first) and
/// answers with its items and the next token; an absent or empty token ends the list.
async fn all_pages<T, Fut>(mut fetch: impl FnMut(Option<String>) -> Fut) -> BackendResult<Vec<T>>
where
    Fut: Future<Output = BackendResult<(Vec<T>, Option<String>)>>,
{
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let (items, next) = fetch(token).await?;
        all.extend(items);
        token = next.filter(|t| !t.is_empty());
        if token.is_none() {
            return Ok(all);
        }
    }
}

/// Maps Kubernetes API failures to the service's error kinds, keeping the failure as the source.
pub fn kube_error(context: &str, e: kube::Error) -> BackendError {
    let mapped = match &e {
        kube::Error::Api(status) => {
            let message = format!("{context}: {} ({})", status.message, status.reason);
            match status.code {
                403 if is_rbac_denial(&status.message) => {
                    BackendError::forbidden(format!("{message}; check the service account's Role"))
                }
                // Any other 403 is an admission plugin refusing this object (a RuntimeClass the
                // cluster lacks, a quota, a pod security policy): the request is what is wrong.
                403 => BackendError::invalid(format!("{message}: the cluster refused it")),
                404 => BackendError::not_found(message),
                409 => BackendError::conflict(message),
                400 | 422 => BackendError::invalid(message),
                429 | 500..=599 => BackendError::unavailable(message),
                _ => BackendError::internal(message),
            }
        }
        _ => {
            BackendError::unavailable(format!("{context}: the Kubernetes API is unreachable: {e}"))
        }
    };
    mapped.with_source(e)
}

/// Whether a 403 comes from RBAC (`User "..." cannot create resource ...`) rather than from an
/// admission plugin (`pods "x" is forbidden: pod rejected: RuntimeClass "y" not found`).
fn is_rbac_denial(message: &str) -> bool {
    message.contains("User \"") && message.contains(" cannot ")
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// What creating a record found: a new record, or one already there (another replica or request
/// created this session's runtime first).
pub enum Created {
    New(Box<ConfigMap>),
    AlreadyExists,
}

/// Longest waits for one API-server call (K8S_OPERATION_TIMEOUT, K8S_QUERY_TIMEOUT): a call
/// past its deadline fails like an unreachable API server, instead of holding a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Creates, patches and deletes.
    pub operation: Duration,
    /// Gets and lists.
    pub query: Duration,
}

/// `call`, failing with a timeout error once `limit` has passed.
async fn bounded<T>(
    limit: Duration,
    setting: &str,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        let message = format!("no answer within {}s ({setting})", limit.as_secs_f64());
        Err(kube::Error::Service(message.into()))
    })
}

/// The API server, as this backend uses it: one namespace, counted requests, mapped errors,
/// bounded waits. Each request is also a span (kube's own, exported with the traces).
#[derive(Clone)]
pub struct Writer {
    client: Client,
    namespace: String,
    metrics: Metrics,
    /// Who records Events. A [`Recorder`] is made per Event: a shared one keeps every Event it
    /// published for six minutes (to count repeats of the same one, which a runtime's Events
    /// hardly are) and forgets them only at its next Event, so after a burst of starts the last
    /// six minutes of them (some 2,000 whole Events after a fill of 5,000) stayed resident.
    reporter: Reporter,
    timeouts: Timeouts,
}

impl Writer {
    pub fn new(
        client: Client,
        namespace: &str,
        metrics: Metrics,
        identity: &str,
        timeouts: Timeouts,
    ) -> Writer {
        let reporter =
            Reporter { controller: "runtime-api".into(), instance: Some(identity.to_string()) };
        Writer { client, namespace: namespace.to_string(), metrics, reporter, timeouts }
    }

    /// A create, patch or delete, bounded by K8S_OPERATION_TIMEOUT.
    async fn write<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        bounded(self.timeouts.operation, "K8S_OPERATION_TIMEOUT", call).await
    }

    /// A get or list, bounded by K8S_QUERY_TIMEOUT.
    async fn read<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, kube::Error> {
        bounded(self.timeouts.query, "K8S_QUERY_TIMEOUT", call).await
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn count<T>(&self, verb: &str, what: &str, result: &Result<T, kube::Error>) {
        let outcome = match result {
            Ok(_) => "ok".to_string(),
            Err(e) => api_code(e).map_or_else(|| "unreachable".to_string(), |c| c.to_string()),
        };
        self.metrics.kube_request(verb, what, &outcome);
    }

    /// Creates the record of a new runtime.
    pub async fn create_record(&self, record: &ConfigMap) -> BackendResult<Created> {
        let result =
            self.write(self.api::<ConfigMap>().create(&PostParams::default(), record)).await;
        self.count("create", "runtime record", &result);
        match result {
            Ok(created) => Ok(Created::New(Box::new(created))),
            Err(e) if api_code(&e) == Some(409) => Ok(Created::AlreadyExists),
            Err(e) => Err(kube_error("creating the runtime record", e)),
        }
    }

    /// Reads a record from the API server (after a conflict: the cache may not have it yet).
    pub async fn get_record(&self, name: &str) -> BackendResult<ConfigMap> {
        self.read(self.api::<ConfigMap>().get(name))
            .await
            .map_err(|e| kube_error("reading the runtime record", e))
    }

    /// Creates an object, treating AlreadyExists as success (completing a half-created runtime).
    pub async fn create<K>(&self, what: &str, obj: &K) -> BackendResult<()>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let result = self.write(self.api::<K>().create(&PostParams::default(), obj)).await;
        self.count("create", what, &result);
        match result {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(kube_error(&format!("creating the {what}"), e)),
        }
    }

    /// Replaces an object with `obj` at the resourceVersion read (a conflict is an error: the
    /// next round reads again).
    pub async fn replace<K>(&self, what: &str, obj: &K, version: &str) -> BackendResult<()>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let mut obj = obj.clone();
        obj.meta_mut().resource_version = Some(version.to_string());
        let name = obj.meta().name.clone().unwrap_or_default();
        let result = self.write(self.api::<K>().replace(&name, &PostParams::default(), &obj)).await;
        self.count("replace", what, &result);
        result.map(|_| ()).map_err(|e| kube_error(&format!("replacing the {what}"), e))
    }

    /// Deletes an object, treating NotFound as success.
    pub async fn delete<K>(&self, what: &str, name: &str) -> BackendResult<()>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let result = self.write(self.api::<K>().delete(name, &DeleteParams::background())).await;
        self.count("delete", what, &result);
        match result {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(kube_error(&format!("deleting the {what}"), e)),
        }
    }

    /// Deletes a record only while it is at `resource_version`: `false` when another writer
    /// changed it first (409) or it is gone (404).
    pub async fn delete_record_at(
        &self,
        name: &str,
        resource_version: &str,
    ) -> BackendResult<bool> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_string()),
                uid: None,
            }),
            ..DeleteParams::background()
        };
        let result = self.write(self.api::<ConfigMap>().delete(name, &params)).await;
        self.count("delete", "runtime record", &result);
        match result {
            Ok(_) => Ok(true),
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(false),
            Err(e) => Err(kube_error("deleting the runtime record", e)),
        }
    }

    /// Deletes every pod of a runtime, whatever its generation.
    pub async fn delete_pods(&self, runtime_id: &str) -> BackendResult<()> {
        let params = ListParams::default().labels(&runtime_selector(runtime_id));
        let pods = self.api::<Pod>();
        let result = self.write(pods.delete_collection(&DeleteParams::background(), &params)).await;
        self.count("deletecollection", "sandbox pod", &result);
        result.map(|_| ()).map_err(|e| kube_error("deleting the sandbox pods", e))
    }

    /// Merges `annotations` into a record's annotations (`null` removes one).
    pub async fn patch_record(
        &self,
        name: &str,
        annotations: serde_json::Value,
    ) -> BackendResult<ConfigMap> {
        let patch = Patch::Merge(json!({"metadata": {"annotations": annotations}}));
        let result =
            self.write(self.api::<ConfigMap>().patch(name, &PatchParams::default(), &patch)).await;
        self.count("patch", "runtime record", &result);
        result.map_err(|e| kube_error("updating the runtime record", e))
    }

    /// [`Writer::patch_record`] only while the record is at `resource_version` (optimistic
    /// concurrency): `None` when another writer changed it first.
    pub async fn patch_record_at(
        &self,
        name: &str,
        resource_version: &str,
        annotations: serde_json::Value,
    ) -> BackendResult<Option<ConfigMap>> {
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": resource_version, "annotations": annotations}
        }));
        let result = self.api::<ConfigMap>().patch(name, &PatchParams::default(), &patch).await;
        self.count("patch", "runtime record", &result);
        match result {
            Ok(patched) => Ok(Some(patched)),
            Err(e) if api_code(&e) == Some(409) => Ok(None),
            Err(e) => Err(kube_error("updating the runtime record", e)),
        }
    }

    /// Merges base64-encoded `data` into a Secret.
    pub async fn patch_secret_data(
        &self,
        name: &str,
        data: serde_json::Value,
    ) -> BackendResult<Secret> {
        let patch = Patch::Merge(json!({ "data": data }));
        let result =
            self.write(self.api::<Secret>().patch(name, &PatchParams::default(), &patch)).await;
        self.count("patch", "secret", &result);
        result.map_err(|e| kube_error("rotating the session key", e))
    }

    /// Merges `patch` into an object. With `metadata.resourceVersion` (or `uid`) in the patch it
    /// is a precondition: `None` when the object changed or is gone (409 or 404).
    pub async fn patch_if<K>(
        &self,
        what: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> BackendResult<Option<K>>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let patch = Patch::Merge(patch);
        let result = self.write(self.api::<K>().patch(name, &PatchParams::default(), &patch)).await;
        self.count("patch", what, &result);
        match result {
            Ok(patched) => Ok(Some(patched)),
            Err(e) if matches!(api_code(&e), Some(404 | 409)) => Ok(None),
            Err(e) => Err(kube_error(&format!("updating the {what}"), e)),
        }
    }

    /// A Secret this service manages, read from the API server (the cache strips its data).
    pub async fn get_secret(&self, name: &str) -> BackendResult<Option<Secret>> {
        let result = self.read(self.api::<Secret>().get_opt(name)).await;
        self.count("get", "secret", &result);
        result.map_err(|e| kube_error("reading a secret", e))
    }

    /// Every object of a kind this service manages (for kinds the cache does not hold), in pages.
    pub async fn list_managed<K>(&self, what: &str) -> BackendResult<Vec<K>>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        all_pages(|token| async move {
            let page = self.read(self.api::<K>().list(&managed_page(token))).await;
            self.count("list", what, &page);
            let page = page.map_err(|e| kube_error(&format!("listing {what}"), e))?;
            Ok((page.items, page.metadata.continue_))
        })
        .await
    }

    /// The metadata of every object of a kind this service manages (what the orphan sweep needs
    /// of the kinds the cache does not hold): only metadata crosses the wire, one page at a time
    /// is held whole, and each object is kept as its [`Meta`]. (5,000 Services and Ingresses
    /// listed whole, in one response each, left the resident memory at 175 MiB instead of 50.)
    pub async fn list_managed_meta<K>(&self, what: &str) -> BackendResult<Vec<Meta>>
    where
        K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        all_pages(|token| async move {
            let page = self.read(self.api::<K>().list_metadata(&managed_page(token))).await;
            self.count("list", what, &page);
            let page = page.map_err(|e| kube_error(&format!("listing {what}"), e))?;
            let metas = page.items.iter().map(|o| Meta::of(&o.metadata)).collect();
            Ok((metas, page.metadata.continue_))
        })
        .await
    }

    /// A Secret this service does not manage (an image pull secret), if it exists.
    pub async fn foreign_secret(&self, name: &str) -> BackendResult<Option<Secret>> {
        self.read(self.api::<Secret>().get_opt(name))
            .await
            .map_err(|e| kube_error(&format!("reading the pull secret {name}"), e))
    }

    /// Records a Kubernetes Event on the runtime's record, in the background (events are for
    /// humans; they must not slow requests down or fail them).
    pub fn event(&self, record: &CachedRecord, warning: bool, reason: &str, note: String) {
        if record.meta.uid.is_empty() {
            return;
        }
        let reference = record.object_reference(&self.namespace);
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "could not record an event");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_page_of_a_list_is_read_until_the_token_runs_out() {
        // The last page's token: absent, or empty (what the API server sends).
        for last in [None, Some(String::new())] {
            let asked = std::sync::Mutex::new(Vec::new());
            let all = all_pages(|token: Option<String>| {
                asked.lock().unwrap().push(token.clone());
                let page = match token.as_deref() {
                    None => (vec![1, 2], Some("a".to_string())),
                    Some("a") => (vec![3], Some("b".to_string())),
                    _ => (vec![4], last.clone()),
                };
                async move { Ok(page) }
            })
            .await
            .unwrap();
            assert_eq!(all, [1, 2, 3, 4]);
            let asked = asked.into_inner().unwrap();
            assert_eq!(asked, [None, Some("a".to_string()), Some("b".to_string())]);
        }
        let failing = all_pages::<u8, _>(|token| async move {
            match token {
                None => Ok((vec![1], Some("a".to_string()))),
                Some(_) => Err(BackendError::unavailable("the API server went away")),
            }
        });
        assert!(failing.await.is_err(), "a failed page fails the list");
    }
    use crate::runtime::ErrorKind;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure(message, "Forbidden").with_code(code).boxed())
    }

    #[tokio::test]
    async fn a_call_past_its_timeout_fails_as_unavailable_naming_the_setting() {
        let never = futures::future::pending::<Result<(), kube::Error>>();
        let e = bounded(Duration::from_millis(20), "K8S_QUERY_TIMEOUT", never).await.unwrap_err();
        let mapped = kube_error("reading the runtime record", e);
        assert_eq!(mapped.kind(), ErrorKind::Unavailable);
        assert!(mapped.to_string().contains("K8S_QUERY_TIMEOUT"), "{mapped}");
        let quick = bounded(Duration::from_secs(5), "K8S_QUERY_TIMEOUT", async { Ok(1) }).await;
        assert_eq!(quick.unwrap(), 1);
    }

    #[test]
    fn rbac_denials_and_admission_rejections_are_told_apart() {
        let rbac = kube_error(
            "creating the sandbox pod",
            api_error(
                403,
                r#"pods is forbidden: User "system:serviceaccount:ns:runtime-api" cannot create resource "pods" in API group "" in the namespace "ns""#,
            ),
        );
        assert_eq!(rbac.kind(), ErrorKind::Forbidden);
        assert!(rbac.to_string().contains("Role"), "{rbac}");
        let admission = kube_error(
            "creating the sandbox pod",
            api_error(
                403,
                r#"pods "oh-rt-x-1" is forbidden: pod rejected: RuntimeClass "gvisor" not found"#,
            ),
        );
        assert_eq!(admission.kind(), ErrorKind::Invalid);
        assert!(
            admission.to_string().contains(r#"RuntimeClass "gvisor" not found"#),
            "{admission}"
        );
        assert!(!admission.to_string().contains("Role"), "{admission}");
    }
}
