//! A throwaway namespace of the test cluster with the service's RBAC (deploy/rbac.yaml) applied,
//! deleted when the test ends; the Kubernetes tests add their own methods to it.

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

pub const NEEDS_CLUSTER: &str = "needs a Kubernetes API server: run scripts/test.sh";

pub fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl on PATH (scripts/cluster.sh up puts it there)");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The cluster's admin client (KUBECONFIG from `scripts/cluster.sh up`).
pub async fn admin() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::try_default().await.expect(NEEDS_CLUSTER)
}

pub struct TestNamespace {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub admin: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> TestNamespace {
        let admin = admin().await;
        let name = format!("{prefix}-{}", &runtime_api::runtime::ids::new_runtime_id()[..8]);
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await.unwrap();
        let rbac = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/rbac.yaml");
        kubectl(&["apply", "-n", &name, "-f", rbac.to_str().unwrap()]);
        TestNamespace { name, dir: tempfile::tempdir().unwrap(), admin }
    }

    /// A kubeconfig that authenticates as the namespace's `runtime-api` ServiceAccount, so a
    /// missing permission shows in the tests too.
    pub fn service_account_kubeconfig(&self) -> PathBuf {
        let token =
            kubectl(&["create", "token", "runtime-api", "-n", &self.name, "--duration", "2h"]);
        let server = std::env::var("RUNTIME_API_CLUSTER_SERVER").expect(NEEDS_CLUSTER);
        let ca = std::env::var("RUNTIME_API_CLUSTER_CA").expect(NEEDS_CLUSTER);
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": ca}}],
            "users": [{"name": "runtime-api", "user": {"token": token.trim()}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "runtime-api", "namespace": self.name}}],
            "current-context": "test"
        });
        let path = self.dir.path().join(format!("sa-{}.kubeconfig", super::free_port()));
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        path
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}
