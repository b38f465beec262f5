//! kubectl's generator commands and `auth can-i`, exactly as README.md, docs/ and the chart's NOTES.txt write them,
//! against the test API server (kubectl sends these as protobuf, with the kubeconfig's token over TLS). The chart's
//! ClusterRoles for people are installed first, as `helm install` would; then RBAC answers with what they grant.

mod support;

use support::{Cluster, apply_chart};

const DOCS: &[&str] = &[
    "README.md",
    "docs/kubectl-plugin.md",
    "docs/vpn.md",
    "docs/chart.md",
    "docs/gitops.md",
    "charts/appdb-operator/templates/NOTES.txt",
];

/// Every `kubectl create …` and `kubectl auth can-i …` line of the documents, in order.
fn documented(prefixes: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"))).expect("doc");
        for line in text.lines() {
            let line = line.trim();
            if prefixes.iter().any(|p| line.starts_with(p)) {
                out.push((doc.to_string(), line.to_owned()));
            }
        }
    }
    out
}

/// Splits a documented command line into arguments (the documents use no quoting in these commands).
fn args(line: &str) -> Vec<String> {
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_create_and_can_i_commands_run_as_written() {
    let c = Cluster::start().await;
    c.install_crds().await;
    apply_chart(&c, &["ClusterRole"]).await;
    let creates = documented(&["kubectl create "]);
    assert!(
        creates.iter().any(|(_, l)| l.starts_with("kubectl create namespace"))
            && creates.iter().any(|(_, l)| l.starts_with("kubectl create rolebinding")),
        "the documents create a namespace and bind roles: {creates:?}"
    );
    // The namespace first, as a reader would have it; each distinct command once.
    let mut ordered: Vec<&(String, String)> = creates.iter().filter(|(_, l)| l.contains("create namespace")).collect();
    ordered.extend(creates.iter().filter(|(_, l)| !l.contains("create namespace")));
    let mut seen = std::collections::BTreeSet::new();
    for (doc, line) in ordered {
        if !seen.insert(line.clone()) {
            continue;
        }
        let argv = args(line);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = c.kubectl(&argv).await;
        assert!(
            out.status.success(),
            "{doc}: `{line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    c.ok(&["get", "rolebinding", "alice-tunnel", "alice-view", "-n", "acme"])
        .await;

    // What the bindings grant, as `kubectl auth can-i` asks it (a SelfSubjectAccessReview, impersonating).
    let checks = documented(&["kubectl auth can-i "]);
    assert!(!checks.is_empty(), "the documents show `kubectl auth can-i`");
    for (doc, line) in &checks {
        let argv = args(line);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = c.kubectl(&argv).await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "yes",
            "{doc}: `{line}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And what they do not grant.
    for denied in [
        "auth can-i delete appdatabases.appdb.dev -n acme --as alice@example.com",
        "auth can-i create pods --subresource=portforward -n other --as alice@example.com",
        // TYPE/NAME: a pod named "portforward", not the subresource (a real cluster answers no as well).
        "auth can-i create pods/portforward -n acme --as alice@example.com",
        "auth can-i get secrets -n other --as alice@example.com",
    ] {
        let argv: Vec<&str> = denied.split_whitespace().collect();
        let out = c.kubectl(&argv).await;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "{denied}");
    }
    // Alice herself may not impersonate anybody: the real server's message.
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&c.server.user_kubeconfig("alice@example.com", &[])).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    config.auth_info.impersonate = Some("bob@example.com".into());
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(kube::Client::try_from(config).expect("client"), "acme");
    match pods.list(&Default::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(
                status.message,
                "users \"bob@example.com\" is forbidden: User \"alice@example.com\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
            );
        }
        other => panic!("impersonation by alice: {other:?}"),
    }
}
