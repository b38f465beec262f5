//! AppDatabase end to end: the real operator binary and kubectl against the test API server.

mod support;

use std::{sync::atomic::Ordering, time::Duration};

use support::{Cluster, apply, eventually, free_port, get, spawn_operator};
use tokio::process::Child;

const PASSWORD: &str = "first-Secret-9";
const NEW_PASSWORD: &str = "second-Secret-9";

async fn start_operator(c: &Cluster) -> Child {
    spawn_operator(
        c,
        free_port(),
        &["--operator-image", "registry.example/appdb-operator:test"],
    )
    .await
}

fn secret(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: acme}}\nstringData: {{{key}: \"{value}\"}}\n"
    )
}

fn database(name: &str, network: &str, secret: &str, extra: &str) -> String {
    format!(
        "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  network: {network}\n  admin: {{username: acme_admin, passwordSecretRef: {{name: {secret}, key: password}}}}\n  storage: {{size: 5Gi}}\n{extra}"
    )
}

/// CRDs, the operator, a namespace and a ready network.
async fn setup(c: &Cluster) -> Child {
    c.install_crds().await;
    let operator = start_operator(c).await;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pnet/prod",
        "-n",
        "acme",
        "--timeout=120s",
    ])
    .await;
    operator
}

async fn reason(c: &Cluster, db: &str) -> String {
    get(
        c,
        &format!("adb/{db}"),
        r#"{.status.conditions[?(@.type=="Ready")].reason}"#,
    )
    .await
}

async fn wait_reason(c: &Cluster, db: &str, expected: &str) {
    eventually(30, &format!("{db} Ready reason {expected}"), || async {
        (reason(c, db).await == expected).then_some(())
    })
    .await;
}

async fn mark_statefulset_ready(c: &Cluster, name: &str) {
    // No kubelet runs here: report the pod ready as a cluster would.
    c.ok(&[
        "patch",
        "sts",
        name,
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_becomes_ready_to_use_and_rotates_its_password() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, &secret("orders-admin", "password", PASSWORD)).await;
    apply(&c, &database("orders", "prod", "orders-admin", "")).await;

    eventually(30, "objects created", || async {
        let out = c
            .kubectl(&[
                "get",
                "sts/orders",
                "svc/orders",
                "svc/orders-headless",
                "cm/orders-config",
                "secret/orders-root",
                "netpol/appdb-db-orders",
                "-n",
                "acme",
            ])
            .await;
        out.status.success().then_some(())
    })
    .await;
    assert_eq!(get(&c, "adb/orders", "{.status.state}").await, "Creating");
    let owner = get(
        &c,
        "sts/orders",
        "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    )
    .await;
    assert_eq!(owner, "AppDatabase/orders");
    // The password reaches the pod only as a Secret reference.
    let sts = c.ok(&["get", "sts", "orders", "-n", "acme", "-o", "json"]).await;
    assert!(!sts.contains(PASSWORD), "password literal in the StatefulSet");
    assert!(
        sts.contains(r#""secretKeyRef":{"key":"password","name":"orders-admin""#) || sts.contains("orders-admin"),
        "{sts}"
    );
    assert_eq!(
        get(
            &c,
            "sts/orders",
            "{.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}"
        )
        .await,
        "Retain"
    );

    mark_statefulset_ready(&c, "orders").await;
    wait_reason(&c, "orders", "ReadyToUse").await;
    assert_eq!(get(&c, "adb/orders", "{.status.state}").await, "Ready To Use");
    assert_eq!(
        get(
            &c,
            "adb/orders",
            "{.status.endpoint.host} {.status.endpoint.address} {.status.endpoint.port} {.status.network}"
        )
        .await,
        "orders.acme.svc.cluster.local 10.20.30.74 3306 prod"
    );
    assert_eq!(get(&c, "pnet/prod", "{.status.type}").await, "Production");
    let cluster_ip = get(&c, "svc/orders", "{.spec.clusterIP}").await;
    assert!(!cluster_ip.is_empty());

    // Steady state: a reconcile that finds nothing to change writes nothing.
    c.ok(&["annotate", "adb", "orders", "-n", "acme", "touch=1"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = c.server.state().writes.load(Ordering::Relaxed);
    c.ok(&["annotate", "adb", "orders", "-n", "acme", "touch=2", "--overwrite"])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = c.server.state().writes.load(Ordering::Relaxed) - before;
    assert_eq!(
        writes,
        1,
        "only the test's own annotate may write; the operator wrote {} times",
        writes - 1
    );

    // Rotation: a new Secret value starts a Job that runs `appdb-operator rotate-password`.
    apply(&c, &secret("orders-admin", "password", NEW_PASSWORD)).await;
    let revision = get(&c, "secret/orders-admin", "{.metadata.resourceVersion}").await;
    let job = format!("orders-rotate-{revision}");
    eventually(30, "rotation Job created", || async {
        c.kubectl(&["get", "job", &job, "-n", "acme"])
            .await
            .status
            .success()
            .then_some(())
    })
    .await;
    let job_json = c.ok(&["get", "job", &job, "-n", "acme", "-o", "json"]).await;
    assert!(
        !job_json.contains(NEW_PASSWORD)
            && job_json.contains("rotate-password")
            && job_json.contains("registry.example/appdb-operator:test"),
        "{job_json}"
    );
    assert_eq!(
        get(
            &c,
            &format!("job/{job}"),
            "{.spec.template.metadata.labels.appdb\\.dev/role}"
        )
        .await,
        "operator-job"
    );
    assert_eq!(reason(&c, "orders").await, "ReadyToUse");
    assert_eq!(
        get(
            &c,
            "adb/orders",
            r#"{.status.conditions[?(@.type=="Reconciling")].reason}"#
        )
        .await,
        "RotatingPassword"
    );
    c.ok(&[
        "patch",
        "job",
        &job,
        "-n",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"succeeded":1}}"#,
    ])
    .await;
    eventually(30, "rotation recorded", || async {
        (get(&c, "adb/orders", "{.status.adminPasswordRevision}").await == revision).then_some(())
    })
    .await;
    let events = c.ok(&["get", "events.events.k8s.io", "-n", "acme", "-o", "json"]).await;
    assert!(
        events.contains("PasswordRotated") && events.contains("ReadyToUse"),
        "{events}"
    );

    // No password in status, events or any object the operator wrote.
    let everything = c
        .ok(&[
            "get",
            "adb,sts,svc,cm,job,netpol,events.events.k8s.io",
            "-n",
            "acme",
            "-o",
            "json",
        ])
        .await;
    for secret_value in [PASSWORD, NEW_PASSWORD] {
        assert!(!everything.contains(secret_value), "a password leaked into the API");
    }

    // Deletion keeps the data (Retain) and cascades to the children.
    apply(&c, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data-orders-0\n  namespace: acme\n  labels: {appdb.dev/database: orders}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 5Gi}}\n").await;
    c.ok(&["delete", "adb", "orders", "-n", "acme", "--timeout=30s"]).await;
    assert!(
        c.kubectl(&["get", "sts", "orders", "-n", "acme"]).await.status.code() != Some(0),
        "StatefulSet collected"
    );
    assert!(
        c.kubectl(&["get", "pvc", "data-orders-0", "-n", "acme"])
            .await
            .status
            .success(),
        "data retained"
    );
    let events = c
        .ok(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "acme",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(events.contains("DataRetained"), "{events}");
    eventually(30, "network back to Test", || async {
        (get(&c, "pnet/prod", "{.status.type}").await == "Test").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_operator_did_not_make_are_never_adopted() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, &secret("seeded-admin", "password", PASSWORD)).await;
    // A customer pre-seeds the root Secret's name with a password of its choosing, and the client Service's name with
    // an extra selector that would send the database's clients to its own pod.
    apply(&c, &secret("seeded-root", "root-password", "customer-chosen-9")).await;
    apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata: {name: seeded, namespace: acme}\nspec:\n  selector: {app: customer-pod}\n  ports: [{port: 3306}]\n",
    )
    .await;
    apply(&c, &database("seeded", "prod", "seeded-admin", "")).await;
    wait_reason(&c, "seeded", "NameInUse").await;
    let message = get(&c, "adb/seeded", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(message.contains("Secret seeded-root already exists"), "{message}");
    assert_eq!(
        get(&c, "adb/seeded", r#"{.status.conditions[?(@.type=="Stalled")].status}"#).await,
        "True"
    );
    // Never written, never read as the operator's: no owner added, and nothing was built from it.
    assert_eq!(get(&c, "secret/seeded-root", "{.metadata.ownerReferences}").await, "");
    assert!(
        c.kubectl(&["get", "sts", "seeded", "-n", "acme"]).await.status.code() != Some(0),
        "a StatefulSet was built with the customer's root password"
    );

    c.ok(&["delete", "secret", "seeded-root", "-n", "acme"]).await;
    eventually(90, "the Service is named next", || async {
        let message = get(&c, "adb/seeded", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
        message.contains("Service seeded already exists").then_some(())
    })
    .await;
    assert_eq!(get(&c, "svc/seeded", "{.spec.selector.app}").await, "customer-pod");
    assert_eq!(get(&c, "svc/seeded", "{.metadata.ownerReferences}").await, "");

    c.ok(&["delete", "service", "seeded", "-n", "acme"]).await;
    eventually(90, "the database proceeds once the names are free", || async {
        (reason(&c, "seeded").await == "Creating").then_some(())
    })
    .await;
    assert_eq!(
        get(&c, "secret/seeded-root", "{.metadata.ownerReferences[0].kind}").await,
        "AppDatabase"
    );
    assert_eq!(get(&c, "svc/seeded", "{.spec.selector.app}").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_input_has_its_reason_and_recovers() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;

    apply(&c, &database("nosecret", "prod", "missing", "")).await;
    wait_reason(&c, "nosecret", "SecretNotFound").await;
    assert_eq!(
        get(
            &c,
            "adb/nosecret",
            r#"{.status.conditions[?(@.type=="Stalled")].status}"#
        )
        .await,
        "True"
    );
    assert_eq!(get(&c, "adb/nosecret", "{.status.state}").await, "Pending");
    assert!(
        c.kubectl(&["get", "sts", "nosecret", "-n", "acme"]).await.status.code() != Some(0),
        "nothing half-created"
    );
    apply(&c, &secret("missing", "password", PASSWORD)).await;
    wait_reason(&c, "nosecret", "Creating").await;

    apply(&c, &secret("wrongkey", "pw", PASSWORD)).await;
    apply(&c, &database("nokey", "prod", "wrongkey", "")).await;
    wait_reason(&c, "nokey", "SecretKeyNotFound").await;

    apply(&c, &secret("weak", "password", "bad pass/@")).await;
    apply(&c, &database("weak", "prod", "weak", "")).await;
    wait_reason(&c, "weak", "InvalidPassword").await;
    let message = get(&c, "adb/weak", r#"{.status.conditions[?(@.type=="Ready")].message}"#).await;
    assert!(
        message.contains("must not contain a space") && !message.contains("bad pass"),
        "{message}"
    );
    apply(&c, &secret("weak", "password", PASSWORD)).await;
    wait_reason(&c, "weak", "Creating").await;

    apply(&c, &database("lost", "nowhere", "missing", "")).await;
    wait_reason(&c, "lost", "NetworkNotFound").await;
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: nowhere, namespace: acme}\nspec: {}\n",
    )
    .await;
    wait_reason(&c, "lost", "Creating").await;

    // A network that cannot become ready (its range is taken): the database waits, Reconciling, not Stalled.
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: clash, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(&c, &database("waiting", "clash", "missing", "")).await;
    wait_reason(&c, "waiting", "NetworkNotReady").await;
    assert_eq!(
        get(
            &c,
            "adb/waiting",
            r#"{.status.conditions[?(@.type=="Reconciling")].status}"#
        )
        .await,
        "True"
    );

    // Two databases on one network get different addresses.
    mark_statefulset_ready(&c, "nosecret").await;
    mark_statefulset_ready(&c, "weak").await;
    wait_reason(&c, "nosecret", "ReadyToUse").await;
    wait_reason(&c, "weak", "ReadyToUse").await;
    let a = get(&c, "adb/nosecret", "{.status.endpoint.address}").await;
    let b = get(&c, "adb/weak", "{.status.endpoint.address}").await;
    assert!(
        a != b && a.starts_with("10.20.30.") && b.starts_with("10.20.30."),
        "{a} {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_published_when_external_dns_is_installed_and_data_deleted_on_request() {
    let c = Cluster::start().await;
    let _op = setup(&c).await;
    apply(&c, &secret("admin", "password", PASSWORD)).await;
    apply(
        &c,
        &database(
            "orders",
            "prod",
            "admin",
            "  dns: {hostname: orders.db.acme.example.com}\n  deletionPolicy: Delete\n",
        ),
    )
    .await;
    let dns_condition = || async {
        get(
            &c,
            "adb/orders",
            r#"{.status.conditions[?(@.type=="DnsPublished")].reason}: {.status.conditions[?(@.type=="DnsPublished")].message}"#,
        )
        .await
    };
    // No domain is allowed for the namespace yet: nothing is published, and the condition says who sets it.
    eventually(30, "DNS refused without an allowed domain", || async {
        let r = dns_condition().await;
        (r.starts_with("DnsNameNotAllowed:") && r.contains("appdb.dev/dns-domains")).then_some(())
    })
    .await;
    c.ok(&[
        "annotate",
        "namespace",
        "acme",
        "appdb.dev/dns-domains=acme.example.com",
    ])
    .await;
    eventually(30, "DNS condition explains the missing CRD", || async {
        let r = get(
            &c,
            "adb/orders",
            r#"{.status.conditions[?(@.type=="DnsPublished")].reason}"#,
        )
        .await;
        (r == "ExternalDnsMissing").then_some(())
    })
    .await;
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: dnsendpoints.externaldns.k8s.io}\nspec:\n  group: externaldns.k8s.io\n  scope: Namespaced\n  names: {kind: DNSEndpoint, plural: dnsendpoints, singular: dnsendpoint}\n  versions:\n  - name: v1alpha1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n";
    apply(&c, crd).await;
    mark_statefulset_ready(&c, "orders").await;
    eventually(90, "DNSEndpoint published", || async {
        let out = c
            .kubectl(&[
                "get",
                "dnsendpoints",
                "orders",
                "-n",
                "acme",
                "-o",
                "jsonpath={.spec.endpoints[0].dnsName}={.spec.endpoints[0].targets[0]}",
            ])
            .await;
        (String::from_utf8_lossy(&out.stdout) == "orders.db.acme.example.com=10.20.30.74").then_some(())
    })
    .await;
    eventually(30, "DnsPublished", || async {
        (get(
            &c,
            "adb/orders",
            r#"{.status.conditions[?(@.type=="DnsPublished")].status}"#,
        )
        .await
            == "True")
            .then_some(())
    })
    .await;
    // Another customer asks for the same name: outside its domains it is refused; with a domain that overlaps
    // (a platform mistake), the name stays with its holder. Neither message names the holder.
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: globex\n  annotations: {appdb.dev/dns-domains: globex.example.com}\n").await;
    apply(
        &c,
        "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: net, namespace: globex}\nspec: {}\n",
    )
    .await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: admin, namespace: globex}\nstringData: {password: first-Secret-9}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: stolen, namespace: globex}\nspec:\n  network: net\n  admin: {username: globex_admin, passwordSecretRef: {name: admin, key: password}}\n  storage: {size: 1Gi}\n  dns: {hostname: orders.db.acme.example.com}\n").await;
    let stolen = || async {
        c.ok(&[
            "get",
            "adb",
            "stolen",
            "-n",
            "globex",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="DnsPublished")].reason}: {.status.conditions[?(@.type=="DnsPublished")].message}"#,
        ])
        .await
    };
    eventually(60, "the other customer's name refused", || async {
        stolen().await.starts_with("DnsNameNotAllowed:").then_some(())
    })
    .await;
    c.ok(&[
        "annotate",
        "--overwrite",
        "namespace",
        "globex",
        "appdb.dev/dns-domains=example.com",
    ])
    .await;
    eventually(60, "an overlapping domain does not take a published name", || async {
        (stolen().await
            == "DnsNameConflict: orders.db.acme.example.com is already published for another database; choose another name")
            .then_some(())
    })
    .await;
    assert!(
        !c.kubectl(&["get", "dnsendpoints", "-n", "globex", "-o", "name"])
            .await
            .stdout
            .windows(6)
            .any(|w| w == b"stolen"),
        "a second DNSEndpoint for the name was published"
    );
    assert_eq!(
        get(
            &c,
            "sts/orders",
            "{.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}"
        )
        .await,
        "Delete"
    );
    apply(&c, "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data-orders-0\n  namespace: acme\n  labels: {appdb.dev/database: orders}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 5Gi}}\n").await;
    c.ok(&["delete", "adb", "orders", "-n", "acme", "--timeout=30s"]).await;
    assert!(
        c.kubectl(&["get", "pvc", "data-orders-0", "-n", "acme"])
            .await
            .status
            .code()
            != Some(0),
        "data deleted on request"
    );
}
