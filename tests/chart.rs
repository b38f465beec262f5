//! The chart as Helm renders it: the real Helm 4 engine (helm-python-sdk, which embeds Helm's Go SDK; pinned by
//! scripts/test.sh) renders and lints `charts/appdb-operator` strictly for the default values and every value set in
//! `charts/appdb-operator/ci/`. The rendered objects must validate against the Kubernetes schemas, have no
//! duplicate keys in the lists a real API server merges by key (server-side apply refuses those, and it is Helm 4's,
//! Argo CD's and Flux's way of applying), apply to the test API server with server-side apply, and the operator
//! started exactly as the rendered Deployment says (its arguments and environment) must run.

mod support;

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;
use support::{Cluster, apply, eventually, free_port};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/appdb-operator");

struct Rendered {
    lint: Value,
    /// (template path, rendered text), NOTES.txt included.
    manifests: Vec<(String, String)>,
    objects: Vec<Value>,
}

fn render(values: Option<&std::path::Path>) -> Rendered {
    try_render(values).unwrap_or_else(|e| panic!("Helm refused the chart with {values:?}:\n{e}"))
}

/// Helm's rendering, or Helm's message when it refuses the values (as `helm install` prints it).
fn try_render(values: Option<&std::path::Path>) -> Result<Rendered, String> {
    let mut command = Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/helm-render.py"))
        .arg(CHART);
    if let Some(v) = values {
        command.arg(v);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("python3 with helm-python-sdk is required (scripts/test.sh installs it): {e}"));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let all: Value = serde_json::from_slice(&out.stdout).expect("JSON from helm-render.py");
    Ok(Rendered {
        lint: all["lint"].clone(),
        manifests: all["manifests"]
            .as_object()
            .expect("manifests")
            .iter()
            .filter_map(|(path, m)| Some((path.clone(), m.as_str()?.to_owned())))
            .collect(),
        objects: all["objects"].as_array().expect("objects").clone(),
    })
}

fn ci_values(name: &str) -> std::path::PathBuf {
    std::path::Path::new(CHART).join("ci").join(name)
}

fn kind<'a>(rendered: &'a Rendered, kind: &str) -> Vec<&'a Value> {
    rendered.objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn env_value<'a>(deployment: &'a Value, name: &str) -> Option<&'a str> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// Typos fail at install with Helm's message naming the value: values.schema.json for types and enums, the
/// templates for an extraEnv entry that would duplicate a variable the chart sets.
#[test]
fn typos_in_values_fail_at_install_with_a_message_naming_the_value() {
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        ("replicaCount: two\n", "/replicaCount"),
        ("vpn:\n  datapath: bogus\n", "/vpn/datapath"),
        ("vpn:\n  exposure: nodeport\n", "/vpn/exposure"),
        ("ipam:\n  pool: [10.0.0.0]\n", "/ipam/pool/0"),
        ("replicas: 2\n", "replicas"),
        ("workloads:\n  nodeSelectors: {pool: tenants}\n", "nodeSelectors"),
        (
            "extraEnv:\n  - {name: APPDB_POOL, value: 10.0.0.0/8}\n",
            "extraEnv: APPDB_POOL is set by the chart",
        ),
        (
            "extraEnv:\n  - {name: HTTPS_PROXY, value: a}\n  - {name: HTTPS_PROXY, value: b}\n",
            "extraEnv: HTTPS_PROXY is listed twice",
        ),
    ];
    for (i, (values, expected)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("case-{i}.yaml"));
        std::fs::write(&file, values).expect("write");
        match try_render(Some(&file)) {
            Ok(_) => panic!("Helm accepted {values:?}"),
            Err(message) => assert!(
                message.contains(expected),
                "{values:?}: the message should name {expected:?}:\n{message}"
            ),
        }
    }
}

/// One replica: no budget, no spread. Several: a PodDisruptionBudget that keeps all but one through drains and a
/// spread over nodes. The platform's placement reaches the operator's flag for the pods it creates, merged with the
/// operator's own, and parses as the operator parses it.
#[test]
fn replicas_bring_a_budget_and_a_spread_and_placement_reaches_the_operator() {
    let single = render(None);
    assert!(kind(&single, "PodDisruptionBudget").is_empty());
    let deployment = kind(&single, "Deployment")[0];
    assert!(deployment["spec"]["template"]["spec"]["topologySpreadConstraints"].is_null());
    assert_eq!(env_value(deployment, "APPDB_WORKLOAD_PLACEMENT"), Some("{}"));

    let placed = render(Some(&ci_values("placement-values.yaml")));
    let budget = kind(&placed, "PodDisruptionBudget");
    assert_eq!(budget.len(), 1);
    assert_eq!(budget[0]["spec"]["maxUnavailable"], 1);
    let deployment = kind(&placed, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        budget[0]["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        pod["nodeSelector"]["node-pool"], "platform",
        "the operator's own placement"
    );
    assert_eq!(
        pod["containers"][0]["args"],
        serde_json::json!(["run", "--rollback-window-seconds=3600"])
    );
    assert_eq!(
        env_value(deployment, "HTTPS_PROXY"),
        Some("http://proxy.platform.svc:3128")
    );
    let placement = appdb_operator::placement::parse(env_value(deployment, "APPDB_WORKLOAD_PLACEMENT").expect("set"))
        .expect("the operator parses the chart's placement");
    assert_eq!(
        placement.node_selector["node-pool"], "tenants",
        "workloads.* wins over the inherited key"
    );
    assert_eq!(placement.tolerations.len(), 1);
    assert_eq!(placement.priority_class_name.as_deref(), Some("tenant-workloads"));

    let dashboard = kind(&placed, "ConfigMap");
    assert_eq!(dashboard.len(), 1, "the dashboard ConfigMap");
    assert_eq!(dashboard[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(dashboard[0]["metadata"]["annotations"]["grafana_folder"], "Platform");
    let json: Value = serde_json::from_str(dashboard[0]["data"]["appdb-operator.json"].as_str().expect("data"))
        .expect("the dashboard JSON survives the template");
    assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()));
}

/// NOTES.txt, what `helm install` prints: how to check the operator and the first customer, with this release's
/// names and ranges.
#[test]
fn the_install_notes_name_this_release() {
    let dir = tempfile::tempdir().expect("dir");
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "ipam:\n  reserved: [10.42.0.0/16]\n").expect("write");
    let rendered = try_render(Some(&values)).expect("render");
    let (_, notes) = rendered
        .manifests
        .iter()
        .find(|(path, _)| path.ends_with("templates/NOTES.txt"))
        .expect("NOTES.txt rendered");
    assert!(notes.contains("rollout status deployment/appdb-operator"), "{notes}");
    assert!(notes.contains("never overlap 10.42.0.0/16"), "{notes}");
    assert!(
        notes.contains("pod-security.kubernetes.io/enforce=privileged") && notes.contains("PodSecurityForbidsGateway"),
        "where the gateways run, and what a namespace that refuses them reports: {notes}"
    );
}

fn value_sets() -> Vec<Option<std::path::PathBuf>> {
    let mut sets: Vec<Option<std::path::PathBuf>> = vec![None];
    let mut files: Vec<_> = std::fs::read_dir(format!("{CHART}/ci"))
        .expect("charts/appdb-operator/ci")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "documented value sets in charts/appdb-operator/ci");
    sets.extend(files.into_iter().map(Some));
    sets
}

/// The keys of the associative lists a real API server merges by key (`x-kubernetes-list-map-keys` of the
/// built-in types the chart renders), by the field that holds the list.
fn list_keys(field: &str) -> Option<&'static [&'static str]> {
    Some(match field {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "protocol"],
        "conditions" => &["type"],
        // Atomic lists (tolerations, RBAC rules and subjects) may repeat entries.
        _ => return None,
    })
}

/// Every duplicate key in an associative list under `value`, as a real server reports it.
fn duplicate_keys(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (field, child) in map {
                let here = format!("{path}.{field}");
                if let (Some(keys), Value::Array(items)) = (list_keys(field), child) {
                    // A Service's ports are keyed by port and protocol, a container's by containerPort and protocol.
                    let keys: &[&str] = if field == "ports" && items.iter().any(|i| i.get("port").is_some()) {
                        &["port", "protocol"]
                    } else {
                        keys
                    };
                    let mut seen = BTreeSet::new();
                    for item in items {
                        let key: Vec<String> = keys
                            .iter()
                            .map(|k| match (item.get(*k), *k) {
                                (Some(v), _) => v.to_string(),
                                (None, "protocol") => "\"TCP\"".into(),
                                (None, _) => "null".into(),
                            })
                            .collect();
                        if !seen.insert(key.clone()) {
                            found.push(format!("{here}: duplicate entries for key [{}]", key.join(",")));
                        }
                    }
                }
                duplicate_keys(child, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                duplicate_keys(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_duplicate_key_check_finds_what_a_server_refuses() {
    let deployment = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "operator", "env": [{"name": "APPDB_POOL", "value": "a"}, {"name": "APPDB_POOL", "value": "a"}],
         "ports": [{"containerPort": 8080}, {"containerPort": 8080, "protocol": "UDP"}]}]}}}});
    let mut found = Vec::new();
    duplicate_keys(&deployment, "", &mut found);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("env: duplicate entries for key [\"APPDB_POOL\"]"),
        "{found:?}"
    );
}

#[test]
fn helm_renders_and_lints_every_value_set_into_valid_objects_without_duplicate_keys() {
    let dir = tempfile::tempdir().expect("dir");
    for values in value_sets() {
        let rendered = render(values.as_deref());
        let label = values
            .as_ref()
            .map_or("default values".into(), |p| p.display().to_string());
        let lint = &rendered.lint;
        assert_eq!(
            lint["errors"],
            serde_json::json!([]),
            "{label}: helm lint --strict: {lint}"
        );
        let findings: Vec<&Value> = lint["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["severity"].as_u64().unwrap_or(0) >= 2)
            .collect();
        assert!(findings.is_empty(), "{label}: helm lint --strict: {findings:?}");
        assert!(
            rendered.objects.iter().any(|o| o["kind"] == "Deployment"),
            "{label}: no Deployment rendered"
        );
        let mut duplicates = Vec::new();
        for object in &rendered.objects {
            let name = format!("{}/{}", object["kind"], object["metadata"]["name"]);
            duplicate_keys(object, &name, &mut duplicates);
        }
        assert!(duplicates.is_empty(), "{label}: {duplicates:#?}");
        // Built-in kinds against the Kubernetes schemas (the ServiceMonitor is the Prometheus Operator's).
        let built_in: Vec<&String> = rendered
            .manifests
            .iter()
            .filter(|(path, m)| {
                !path.ends_with("NOTES.txt") && !m.contains("kind: ServiceMonitor") && !m.trim().is_empty()
            })
            .map(|(_, m)| m)
            .collect();
        let file = dir.path().join("rendered.yaml");
        std::fs::write(
            &file,
            built_in.iter().map(|m| format!("---\n{m}\n")).collect::<String>(),
        )
        .expect("write");
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.33.0"])
            .arg(&file)
            .output()
            .expect("kubernetes-validate (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{label}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What broke `helm install` with Helm 4 (server-side apply): the Deployment as the chart once rendered it, with
/// environment variables listed twice, is refused by the test API server as a real one refuses it; the chart's
/// rendering as it is now applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_refuses_the_duplicated_env_the_chart_once_had() {
    let c = Cluster::start().await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: appdb-system}\n").await;
    let rendered = render(None);
    let deployment = kind(&rendered, "Deployment")[0].clone();
    let mut old = deployment.clone();
    old["metadata"]["namespace"] = "appdb-system".into();
    let env = old["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .expect("env");
    let again: Vec<Value> = env
        .iter()
        .filter(|e| e["name"] == "APPDB_POOL" || e["name"] == "APPDB_CONCURRENCY")
        .cloned()
        .collect();
    env.extend(again);
    let refused = c
        .fails(
            &["apply", "--server-side", "-f", "-"],
            Some(&serde_json::to_string(&old).expect("JSON")),
        )
        .await;
    assert!(
        refused.contains(
            ".spec.template.spec.containers[name=\"operator\"].env: duplicate entries for key [name=\"APPDB_POOL\"]"
        ),
        "{refused}"
    );
    let mut now = deployment;
    now["metadata"]["namespace"] = "appdb-system".into();
    apply(&c, &serde_json::to_string(&now).expect("JSON")).await;
}

/// The default rendering applied with server-side apply, and the operator started from the rendered Deployment's
/// own arguments and environment (the test only points it at the test cluster and a free port): it becomes ready
/// and allocates a network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_chart_applies_and_its_deployment_runs_the_operator() {
    let c = Cluster::start().await;
    let mut operator = install_and_run(&c, None).await;
    let _ = operator.kill().await;
}

/// With the dedicated-nodes value set, the database server the operator creates carries the platform's node
/// selector, toleration and priority class (the operator's own pod stays on its pool).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platforms_placement_reaches_the_database_pods_the_operator_creates() {
    let c = Cluster::start().await;
    let mut operator = install_and_run(&c, Some(&ci_values("placement-values.yaml"))).await;
    apply(
        &c,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: orders-admin, namespace: acme}\nstringData: {password: change-me-Secur3!}\n",
    )
    .await;
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  engine: MySQL\n  version: \"8.4\"\n  admin: {username: acme_admin, passwordSecretRef: {name: orders-admin, key: password}}\n  storage: {size: 1Gi}\n",
    )
    .await;
    let pod = eventually(60, "the database StatefulSet", || async {
        let out = c.kubectl(&["-n", "acme", "get", "statefulsets", "-o", "json"]).await;
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        list["items"]
            .as_array()?
            .first()
            .map(|s| s["spec"]["template"]["spec"].clone())
    })
    .await;
    let _ = operator.kill().await;
    assert_eq!(
        pod["nodeSelector"],
        serde_json::json!({"node-pool": "tenants"}),
        "{pod}"
    );
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"key": "dedicated", "operator": "Equal", "value": "tenants", "effect": "NoSchedule"}])
    );
    assert_eq!(pod["priorityClassName"], "tenant-workloads");
}

/// Applies the chart's rendering (with `values`) by server-side apply, starts the operator exactly as the rendered
/// Deployment says, as its service account under the rendered RBAC (the test only points it at the test cluster
/// and a free port), and waits until it allocated a network for `acme/prod`.
async fn install_and_run(c: &Cluster, values: Option<&std::path::Path>) -> tokio::process::Child {
    c.install_crds().await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: appdb-system}\n").await;
    let rendered = render(values);
    for object in rendered.objects.iter().filter(|o| o["kind"] != "ServiceMonitor") {
        let mut object = object.clone();
        if object["metadata"].get("namespace").is_none()
            && !object["kind"].as_str().unwrap_or("").starts_with("Cluster")
        {
            object["metadata"]["namespace"] = "appdb-system".into();
        }
        let yaml = serde_saphyr::to_string(&object).expect("YAML");
        let out = c
            .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(&yaml))
            .await;
        assert!(
            out.status.success(),
            "{}: {}",
            object["kind"],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deployment = rendered
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the operator's Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string").to_owned())
        .collect();
    let port = free_port();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"));
    command.args(&args).env_clear();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("name");
        let value = match (&var["value"], &var["valueFrom"]["fieldRef"]["fieldPath"]) {
            (Value::String(v), _) => v.clone(),
            (_, Value::String(path)) if path == "metadata.name" => "appdb-operator-7d9f8c6b5-x2k4p".into(),
            (_, Value::String(path)) if path == "metadata.namespace" => "appdb-system".into(),
            other => panic!("{name}: unexpected source {other:?}"),
        };
        command.env(name, value);
    }
    // As the rendered Deployment's service account, under the rendered RBAC.
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let kubeconfig = c.dir.path().join("operator-kubeconfig");
    std::fs::write(
        &kubeconfig,
        c.server.service_account_kubeconfig("appdb-system", account),
    )
    .expect("kubeconfig");
    let log = c.dir.path().join("operator.log");
    let mut operator = command
        .env("APPDB_LISTEN", format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(c.dir.path().join("operator.err")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the operator");
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    if ready.is_err() {
        let _ = operator.kill().await;
        panic!(
            "the operator started from the rendered Deployment never became ready:\n{}{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(c.dir.path().join("operator.err")).unwrap_or_default()
        );
    }
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(
        c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {}\n",
    )
    .await;
    eventually(60, "the network gets a range from the chart's pool", || async {
        let cidr = support::get(c, "pnet/prod", "{.status.cidr}").await;
        (!cidr.is_empty()).then_some(cidr)
    })
    .await;
    operator
}

/// docs/security.md's RBAC table is the rendered ClusterRole: one row per rule, with its group, resources and verbs
/// (and a reason), nothing missing and nothing extra.
#[test]
fn the_security_docs_rbac_table_is_the_charts_cluster_role() {
    let rendered = render(None);
    let role = kind(&rendered, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "appdb-operator")
        .expect("the operator's ClusterRole");
    let strings = |v: &Value| -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        out.sort();
        out
    };
    let mut chart: Vec<(String, Vec<String>, Vec<String>)> = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|rule| {
            let group = strings(&rule["apiGroups"]).join(",");
            let group = if group.is_empty() { "(core)".to_owned() } else { group };
            (group, strings(&rule["resources"]), strings(&rule["verbs"]))
        })
        .collect();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md")).expect("docs");
    let table = docs.split("## RBAC").nth(1).expect("an RBAC section");
    let split = |cell: &str| -> Vec<String> {
        let mut out: Vec<String> = cell
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        out.sort();
        out
    };
    let mut documented: Vec<(String, Vec<String>, Vec<String>)> = table
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| API group"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert!(cells.len() == 4 && !cells[3].is_empty(), "a row with a reason: {l}");
            (cells[0].to_owned(), split(cells[1]), split(cells[2]))
        })
        .collect();
    chart.sort();
    documented.sort();
    assert_eq!(
        documented, chart,
        "docs/security.md's RBAC table and the chart's ClusterRole"
    );
}
