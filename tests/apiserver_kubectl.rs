//! The test API server driven by the real, unmodified kubectl: what every controller test stands on.

mod support;

use support::{Cluster, eventually, kubectl_port_forward};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/acme");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_register_kinds_and_examples_apply() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let crds = c.ok(&["get", "crds", "-o", "name"]).await;
    assert!(crds.contains("privatenetworks.appdb.dev"), "{crds}");
    c.ok(&["apply", "--server-side", "-f", EXAMPLES]).await;
    let out = c.ok(&["get", "appdatabases", "-A"]).await;
    assert!(out.contains("acme") && out.contains("orders"), "{out}");
    let all = c.ok(&["get", "appdb", "-n", "acme", "-o", "name"]).await;
    for expected in [
        "privatenetwork.appdb.dev/prod",
        "appdatabase.appdb.dev/orders",
        "vpnconnection.appdb.dev/seattle",
        "databasemigration.appdb.dev/orders-to-prod-2026",
    ] {
        assert!(all.contains(expected), "category appdb lists {expected}: {all}");
    }
    let short = c
        .ok(&["get", "pnet", "prod", "-n", "acme", "-o", "jsonpath={.spec.cidr}"])
        .await;
    assert_eq!(short, "10.20.30.64/26");
    // Printer columns come from the CRD.
    let table = c.ok(&["get", "dbmig", "-n", "acme"]).await;
    let example = std::fs::read_to_string(format!("{EXAMPLES}/40-migration.yaml")).expect("example");
    let scheduled_at = example
        .lines()
        .find_map(|l| l.trim().strip_prefix("scheduledAt: "))
        .expect("the example names a time")
        .trim_matches('"');
    assert!(
        table.contains("SCHEDULED") && table.contains(scheduled_at) && !table.contains("ZONE"),
        "{table}"
    );
    // The zone and the instant in UTC are wide columns.
    let wide = c.ok(&["get", "dbmig", "-n", "acme", "-o", "wide"]).await;
    assert!(wide.contains("ZONE") && wide.contains("Europe/Amsterdam"), "{wide}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_at_admission() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let bad = "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: bad, namespace: default}\nspec: {cidr: 10.20.30.65/26}\n";
    let err = c.fails(&["apply", "--server-side", "-f", "-"], Some(bad)).await;
    assert!(err.contains("cidr must start on a /26 boundary"), "{err}");
    let unknown = "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: bad, namespace: default}\nspec: {kind: Production}\n";
    let err = c.fails(&["apply", "--server-side", "-f", "-"], Some(unknown)).await;
    assert!(err.contains("spec.kind: field not declared in schema"), "{err}");
    let missing_ns = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nowhere}\n";
    let err = c.fails(&["apply", "--server-side", "-f", "-"], Some(missing_ns)).await;
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
    // Immutability is a transition rule: it sees the stored object.
    c.ok_stdin(&["apply", "--server-side", "-f", "-"], "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: net1, namespace: default}\nspec: {cidr: 10.0.0.0/26}\n").await;
    let err = c
        .fails(&["apply", "--server-side", "-f", "-"], Some("apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: net1, namespace: default}\nspec: {cidr: 10.0.0.64/26}\n"))
        .await;
    assert!(err.contains("spec.cidr is immutable once set"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_list_with_selectors_and_generate_name() {
    let c = Cluster::start().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {tier: db, customer: acme}}\ndata: {k: v}\n",
    )
    .await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, labels: {tier: web}}\n",
    )
    .await;
    let err = c
        .fails(
            &["create", "-f", "-"],
            Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"),
        )
        .await;
    assert!(
        err.contains("AlreadyExists") && err.contains("configmaps \"a\" already exists"),
        "{err}"
    );
    let generated = c
        .ok_stdin(
            &["create", "-f", "-", "-o", "name"],
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: gen-}\n",
        )
        .await;
    assert!(
        generated.trim().starts_with("configmap/gen-") && generated.trim().len() > "configmap/gen-".len(),
        "{generated}"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "tier=db", "-o", "name"]).await.trim(),
        "configmap/a"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "tier in (db,web),!customer", "-o", "name"])
            .await
            .trim(),
        "configmap/b"
    );
    // As in Kubernetes, `!=` also matches objects without the label.
    let not_db = c.ok(&["get", "cm", "-l", "tier!=db", "-o", "name"]).await;
    assert!(
        not_db.contains("configmap/b") && not_db.contains("configmap/gen-") && !not_db.contains("configmap/a\n"),
        "{not_db}"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-A", "--field-selector", "metadata.name=a", "-o", "name"])
            .await
            .trim(),
        "configmap/a"
    );
    let err = c.fails(&["get", "cm", "nope"], None).await;
    assert!(
        err.contains("NotFound") && err.contains("configmaps \"nope\" not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_conflicts_and_json_patch_test_op() {
    let c = Cluster::start().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c1}\ndata: {a: b}\n",
    )
    .await;
    let current: serde_json::Value = serde_json::from_str(&c.ok(&["get", "cm", "c1", "-o", "json"]).await).unwrap();
    c.ok(&["patch", "cm", "c1", "--type=merge", "-p", r#"{"data":{"a":"changed"}}"#])
        .await;
    let mut stale = current.clone();
    stale["data"]["a"] = "mine".into();
    let err = c.fails(&["replace", "-f", "-"], Some(&stale.to_string())).await;
    assert!(
        err.contains("Conflict") && err.contains("the object has been modified"),
        "{err}"
    );
    let err = c
        .fails(
            &[
                "patch",
                "cm",
                "c1",
                "--type=json",
                "-p",
                r#"[{"op":"test","path":"/data/a","value":"mine"},{"op":"replace","path":"/data/a","value":"x"}]"#,
            ],
            None,
        )
        .await;
    assert!(err.contains("value did not match"), "{err}");
    c.ok(&[
        "patch",
        "cm",
        "c1",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/a","value":"changed"},{"op":"replace","path":"/data/a","value":"x"}]"#,
    ])
    .await;
    assert_eq!(c.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]).await, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_tracks_field_owners() {
    let c = Cluster::start().await;
    let cm = |v: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: owned}}\ndata: {{key: {v}}}\n");
    c.ok_stdin(
        &["apply", "--server-side", "--field-manager", "alice", "-f", "-"],
        &cm("a"),
    )
    .await;
    let err = c
        .fails(
            &["apply", "--server-side", "--field-manager", "bob", "-f", "-"],
            Some(&cm("b")),
        )
        .await;
    assert!(
        err.contains("conflict") && err.contains("alice") && err.contains(".data.key"),
        "{err}"
    );
    c.ok_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "bob",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &cm("b"),
    )
    .await;
    let managers = c
        .ok(&[
            "get",
            "cm",
            "owned",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ])
        .await;
    assert!(managers.contains("bob"), "{managers}");
    // A manager that stops applying a field removes it when nobody else owns it.
    c.ok_stdin(
        &["apply", "--server-side", "--field-manager", "bob", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned}\ndata: {other: x}\n",
    )
    .await;
    let data = c.ok(&["get", "cm", "owned", "-o", "jsonpath={.data}"]).await;
    assert!(!data.contains("key") && data.contains("other"), "{data}");
}

/// In built-in kinds, server-side apply and strategic merge patch merge the associative lists item by item, with
/// ownership per item, as a real server does: two managers keep their own environment variables in one container,
/// a strategic patch adds a variable and deletes another by key, and a conflict names the item. A wrong type and an
/// unknown field are refused against the Kubernetes schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn associative_lists_merge_by_key_and_built_in_kinds_are_validated() {
    let c = Cluster::start().await;
    c.ok(&["create", "namespace", "lists"]).await;
    let deployment = |env: &str, image: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app, namespace: lists}}\nspec:\n  selector: {{matchLabels: {{app: x}}}}\n  template:\n    metadata: {{labels: {{app: x}}}}\n    spec:\n      containers:\n      - name: app\n{image}        env: [{env}]\n"
        )
    };
    let apply_as = |manager: &'static str, body: String| {
        let c = &c;
        async move {
            c.kubectl_stdin(
                &["apply", "--server-side", "--field-manager", manager, "-f", "-"],
                Some(&body),
            )
            .await
        }
    };
    let out = apply_as("chart", deployment("{name: A, value: '1'}", "        image: app:1\n")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = apply_as("injector", deployment("{name: B, value: '2'}", "")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let env = || async {
        c.ok(&[
            "get",
            "deploy",
            "app",
            "-n",
            "lists",
            "-o",
            "jsonpath={range .spec.template.spec.containers[0].env[*]}{.name}={.value} {end}",
        ])
        .await
    };
    assert_eq!(env().await.trim(), "A=1 B=2", "both managers' variables, in order");
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "app",
            "-n",
            "lists",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])
        .await,
        "app:1",
        "the injector's apply leaves the chart's image alone"
    );
    // The chart setting the injector's variable conflicts, naming the item.
    let out = apply_as(
        "chart",
        deployment("{name: A, value: '1'}, {name: B, value: '3'}", "        image: app:1\n"),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("injector") && err.contains(r#".env[name="B"].value"#),
        "{err}"
    );
    // The chart dropping its own variable removes only that item.
    let out = apply_as("chart", deployment("", "        image: app:1\n")).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env().await.trim(), "B=2");

    // Strategic merge patch: add C to the container by name, delete B by key.
    c.ok(&[
        "patch",
        "deploy",
        "app",
        "-n",
        "lists",
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","env":[{"name":"C","value":"3"},{"name":"B","$patch":"delete"}]}]}}}}"#,
    ])
    .await;
    assert_eq!(env().await.trim(), "C=3");
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "app",
            "-n",
            "lists",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}"
        ])
        .await,
        "app",
        "the container was merged by name, not replaced or added"
    );

    // Built-in kinds are validated: a wrong type, and an unknown field under strict field validation (kubectl's
    // default).
    let wrong = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typed, namespace: lists}\nspec:\n  replicas: two\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: [{name: app, image: a}]}\n";
    let err = c.fails(&["apply", "--server-side", "-f", "-"], Some(wrong)).await;
    assert!(err.contains("spec.replicas") && err.contains("integer"), "{err}");
    let unknown = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, namespace: lists}\ndatta: {a: b}\n";
    let err = c.fails(&["create", "-f", "-"], Some(unknown)).await;
    assert!(
        err.contains("datta") && err.contains("field not declared in schema"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_until_removed() {
    let c = Cluster::start().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, finalizers: [appdb.dev/test]}\n",
    )
    .await;
    c.ok(&["delete", "cm", "held", "--wait=false"]).await;
    let ts = c
        .ok(&["get", "cm", "held", "-o", "jsonpath={.metadata.deletionTimestamp}"])
        .await;
    assert!(
        !ts.is_empty(),
        "deletionTimestamp set while the finalizer holds the object"
    );
    let err = c
        .fails(
            &[
                "patch",
                "cm",
                "held",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":["appdb.dev/test","another"]}}"#,
            ],
            None,
        )
        .await;
    assert!(err.contains("no new finalizers can be added"), "{err}");
    c.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await;
    let err = c.fails(&["get", "cm", "held"], None).await;
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_cascades_to_dependents_and_namespaces_empty_out() {
    let c = Cluster::start().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: cust}\n",
    )
    .await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner, namespace: cust}\n",
    )
    .await;
    let uid = c
        .ok(&["get", "cm", "owner", "-n", "cust", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let dependent = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dep\n  namespace: cust\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}\nstringData: {{k: v}}\n"
    );
    c.ok_stdin(&["create", "-f", "-"], &dependent).await;
    c.ok(&["delete", "cm", "owner", "-n", "cust"]).await;
    let err = c.fails(&["get", "secret", "dep", "-n", "cust"], None).await;
    assert!(err.contains("not found"), "dependent collected: {err}");

    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: leftover, namespace: cust}\n",
    )
    .await;
    c.ok(&["delete", "namespace", "cust"]).await;
    assert!(c.fails(&["get", "namespace", "cust"], None).await.contains("not found"));
    assert!(
        c.fails(&["get", "cm", "leftover", "-n", "cust"], None)
            .await
            .contains("not found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_and_generation_rules() {
    let c = Cluster::start().await;
    c.install_crds().await;
    let with_status = "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: net1, namespace: default}\nspec: {description: one}\nstatus: {cidr: 10.0.0.0/26}\n";
    c.ok_stdin(&["create", "-f", "-"], with_status).await;
    assert_eq!(
        c.ok(&["get", "pnet", "net1", "-o", "jsonpath={.status}"]).await,
        "",
        "create cannot set status"
    );
    let generation = || async {
        c.ok(&["get", "pnet", "net1", "-o", "jsonpath={.metadata.generation}"])
            .await
    };
    assert_eq!(generation().await, "1");
    // Status writes go through /status, leave spec alone and do not bump the generation.
    c.ok(&[
        "patch",
        "pnet",
        "net1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"spec":{"description":"sneaky"},"status":{"cidr":"10.0.0.0/26"}}"#,
    ])
    .await;
    assert_eq!(
        c.ok(&[
            "get",
            "pnet",
            "net1",
            "-o",
            "jsonpath={.status.cidr}/{.spec.description}"
        ])
        .await,
        "10.0.0.0/26/one"
    );
    assert_eq!(generation().await, "1");
    // Writes to the main resource leave status alone; labels do not bump the generation, spec changes do.
    c.ok(&[
        "patch",
        "pnet",
        "net1",
        "--type=merge",
        "-p",
        r#"{"status":{"cidr":"192.168.0.0/26"}}"#,
    ])
    .await;
    assert_eq!(
        c.ok(&["get", "pnet", "net1", "-o", "jsonpath={.status.cidr}"]).await,
        "10.0.0.0/26"
    );
    c.ok(&["label", "pnet", "net1", "team=db"]).await;
    assert_eq!(generation().await, "1");
    c.ok(&[
        "patch",
        "pnet",
        "net1",
        "--type=merge",
        "-p",
        r#"{"spec":{"description":"two"}}"#,
    ])
    .await;
    assert_eq!(generation().await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_wait_see_changes() {
    let c = Cluster::start().await;
    c.install_crds().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: w, namespace: default}\nspec: {}\n",
    )
    .await;
    let waiter = c.kubectl(&["wait", "--for=condition=Ready", "pnet/w", "--timeout=20s"]);
    let patcher = async {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        c.ok(&["patch", "pnet", "w", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"conditions":[{"type":"Ready","status":"True","reason":"Allocated","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#]).await;
    };
    let (out, ()) = tokio::join!(waiter, patcher);
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("condition met"));

    let rv = c
        .ok(&["get", "pnet", "w", "-o", "jsonpath={.metadata.resourceVersion}"])
        .await;
    let watch_path = format!(
        "/apis/appdb.dev/v1alpha1/namespaces/default/privatenetworks?watch=1&resourceVersion={rv}&timeoutSeconds=3"
    );
    let watch_args = ["get", "--raw", watch_path.as_str()];
    let watcher = c.kubectl(&watch_args);
    let labeler = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        c.ok(&["label", "pnet", "w", "seen=yes"]).await;
    };
    let (out, ()) = tokio::join!(watcher, labeler);
    let events = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        events.contains("\"type\":\"MODIFIED\"") && events.contains("\"seen\":\"yes\""),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_resource_version_gets_410() {
    let c = Cluster::start().await;
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: before}\n",
    )
    .await;
    c.server.compact();
    c.ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: after}\n",
    )
    .await;
    let out = c
        .ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=2",
        ])
        .await;
    assert!(
        out.contains("\"type\":\"ERROR\"") && out.contains("\"code\":410") && out.contains("Expired"),
        "{out}"
    );
    // A watch from a resumable version replays what happened since.
    let rv: u64 = c
        .ok(&["get", "cm", "after", "-o", "jsonpath={.metadata.resourceVersion}"])
        .await
        .parse()
        .unwrap();
    let out = c
        .ok(&[
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={}&timeoutSeconds=1",
                rv - 1
            ),
        ])
        .await;
    assert!(
        out.contains("\"type\":\"ADDED\"") && out.contains("\"name\":\"after\""),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_status_objects() {
    let c = Cluster::start().await;
    let err = c
        .fails(&["get", "--raw", "/api/v1/namespaces/default/configmaps/none"], None)
        .await;
    assert!(err.contains("NotFound"), "{err}");
    let ok = eventually(5, "discovery lists the core kinds", || async {
        let r = c.ok(&["api-resources", "--api-group="]).await;
        (r.contains("configmaps") && r.contains("namespaces")).then_some(r)
    })
    .await;
    assert!(ok.contains("secrets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_send_bookmarks_when_asked() {
    let c = Cluster::start().await;
    let out = c
        .ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=3",
        ])
        .await;
    let bookmark = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"] == "BOOKMARK")
        .unwrap_or_else(|| panic!("no BOOKMARK event in {out}"));
    assert_eq!(bookmark["object"]["kind"], "ConfigMap");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| !rv.is_empty())
    );
    let without = c
        .ok(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=2",
        ])
        .await;
    assert!(!without.contains("BOOKMARK"), "{without}");
}

/// A stand-in for a pod's server: echoes what it is sent and, once the client stops sending, says `bye` and
/// closes, so that a half-close has to travel through the forward and the answer back.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                let _ = conn.write_all(b"bye").await;
            });
        }
    });
    addr
}

/// One connection through the forward: `payload` goes in, is echoed back whole, and after a half-close the
/// server's last word arrives too.
async fn round_trip(port: u16, payload: Vec<u8>) -> Result<(), String> {
    tokio::time::timeout(std::time::Duration::from_secs(60), round_trip_unbounded(port, payload))
        .await
        .unwrap_or_else(|_| Err("no complete answer within 60 s".into()))
}

async fn round_trip_unbounded(port: u16, payload: Vec<u8>) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut from, mut to) = conn.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        to.write_all(&sent).await?;
        to.shutdown().await
    });
    let mut back = Vec::new();
    from.read_to_end(&mut back).await.map_err(|e| format!("read: {e}"))?;
    writer.await.expect("writer").map_err(|e| format!("write: {e}"))?;
    let mut expected = payload;
    expected.extend_from_slice(b"bye");
    if back == expected {
        Ok(())
    } else {
        Err(format!("{} bytes came back, {} expected", back.len(), expected.len()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_carries_connections_over_websocket_and_spdy_under_rbac() {
    let c = Cluster::start().await;
    let echo = echo_server().await;
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: echo, namespace: default, labels: {app: echo}}\nspec:\n  containers:\n  - {name: echo, image: busybox, ports: [{name: echo, containerPort: 7000}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\nspec:\n  selector: {app: echo}\n  ports: [{name: echo, port: 80, targetPort: echo}]\n",
    )
    .await;
    // kubectl forwards only to a running pod.
    c.ok(&[
        "patch",
        "pod",
        "echo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ])
    .await;
    c.server.map_port_forward("default", "echo", echo);
    // kubectl's default since 1.31 (SPDY inside a WebSocket) and its fallback (SPDY on the upgraded connection).
    for websockets in [true, false] {
        for target in ["pod/echo", "svc/echo"] {
            let remote = if target == "svc/echo" { ":80" } else { ":7000" };
            let (mut kubectl, port) = kubectl_port_forward(&c, &c.kubeconfig(), &[target, remote], websockets)
                .await
                .expect("kubectl port-forward");
            // Concurrent connections, each larger than SPDY's 64 KiB initial window and than a WebSocket
            // message: neither side may wait for a window update that kubectl never sends.
            let payloads: Vec<Vec<u8>> = (0..3u8)
                .map(|i| (0..(1 << 20)).map(|n: u32| (n as u8) ^ i.wrapping_mul(97)).collect())
                .collect();
            let results = futures::future::join_all(payloads.into_iter().map(|p| round_trip(port, p))).await;
            for result in results {
                result.unwrap_or_else(|e| panic!("{target} (websockets={websockets}): {e}"));
            }
            // A connection after others have finished reuses the same session.
            round_trip(port, b"SELECT 1".to_vec())
                .await
                .expect("a later connection");
            kubectl.kill().await.expect("stop kubectl");
        }
    }
    // Each mode took its own path: no silent fallback from the WebSocket to plain SPDY.
    let sessions = c.server.port_forward_sessions();
    assert_eq!(sessions.get("SPDY/3.1+portforward.k8s.io"), Some(&2), "{sessions:?}");
    assert_eq!(sessions.get("SPDY/3.1"), Some(&2), "{sessions:?}");
    // A forward to a port where nothing listens: kubectl names the cause from the error stream.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    c.server.map_port_forward("default", "echo", closed_addr);
    let (mut kubectl, port) = kubectl_port_forward(&c, &c.kubeconfig(), &["pod/echo", ":7000"], true)
        .await
        .expect("kubectl port-forward");
    let mut stderr = kubectl.stderr.take().expect("stderr");
    let _ = round_trip(port, b"x".to_vec()).await;
    let mut said = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            said.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&said).contains("error forwarding port 7000") {
                break;
            }
        }
    })
    .await;
    let said = String::from_utf8_lossy(&said);
    assert!(
        said.contains("error forwarding port 7000 to pod echo") && said.contains("refused"),
        "{said}"
    );
    kubectl.kill().await.expect("stop kubectl");
    // RBAC decides: a person who may read the pod but not create pods/portforward is refused with a real
    // server's message, on either protocol.
    c.server.map_port_forward("default", "echo", echo);
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: pod-reader, namespace: default}\nrules:\n- {apiGroups: [\"\"], resources: [pods], verbs: [get, list]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: dana-reads-pods, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}\nsubjects:\n- {apiGroup: rbac.authorization.k8s.io, kind: User, name: dana}\n",
    )
    .await;
    for websockets in ["true", "false"] {
        let out = tokio::process::Command::new("kubectl")
            .args(["port-forward", "pod/echo", ":7000", "--as=dana"])
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", c.dir.path())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(30), out)
            .await
            .expect("kubectl gave up within 30 s")
            .expect("kubectl");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dana may not forward: {err}");
        assert!(
            err.contains("User \"dana\" cannot create resource \"pods/portforward\""),
            "websockets={websockets}: {err}"
        );
    }
}
