//! The test cluster with a real kubelet (testkit::pods::kubelet): the real operator and kubectl against the test
//! API server, whose StatefulSets, Deployments, Jobs and Pods run as real processes under their own specs, with
//! status computed from those processes.
//! Needs root, iproute2, nftables, kubectl and the database engines (scripts/test.sh installs them).

mod support;

#[path = "support/real_cluster.rs"]
mod real_cluster;

use appdb_testkit::{dbserver::Engine, on_both_engines};
use real_cluster::RealCluster;
use support::{apply, eventually, free_port, get, spawn_operator};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/acme");

/// The acme example (network and database), for `engine`.
fn acme_database(engine: Engine) -> String {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/20-database.yaml")).expect("example");
    match engine {
        Engine::MySql => text,
        Engine::MariaDb => text
            .replace("engine: MySQL", "engine: MariaDB")
            .replace("version: \"8.4\"", "version: \"11.4\""),
    }
}

async fn the_acme_database_runs_as_a_real_pod_and_is_ready_to_use(engine: Engine) {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    c.install_crds().await;
    let _operator = spawn_operator(c, free_port(), &[]).await;
    c.ok(&["apply", "--server-side", "-f", &format!("{EXAMPLES}/00-namespace.yaml")])
        .await;
    c.ok(&["apply", "--server-side", "-f", &format!("{EXAMPLES}/10-network.yaml")])
        .await;
    apply(c, &acme_database(engine)).await;
    // Ready To Use only once the real server answers the pod's own readiness probe.
    eventually(240, "orders Ready To Use", || async {
        (get(c, "adb/orders", "{.status.state}").await == "Ready To Use").then_some(())
    })
    .await;
    assert_eq!(rc.jsonpath("acme", "pod/orders-0", "{.status.phase}").await, "Running");
    assert_eq!(
        rc.jsonpath(
            "acme",
            "pod/orders-0",
            r#"{.status.conditions[?(@.type=="Ready")].status}"#
        )
        .await,
        "True"
    );
    let ip = rc.jsonpath("acme", "pod/orders-0", "{.status.podIP}").await;
    assert!(ip.starts_with("10.244.0."), "a pod address from the node's range: {ip}");
    assert_eq!(rc.jsonpath("acme", "sts/orders", "{.status.readyReplicas}").await, "1");
    // The customer's administrator exists, with the password from the example's Secret.
    let client = match engine {
        Engine::MySql => "mysql",
        Engine::MariaDb => "mariadb",
    };
    let out = rc
        .kubelet
        .exec(
            "acme",
            "orders-0",
            "database",
            &[
                client,
                "-N",
                "-uacme_admin",
                "-pchange-me-Secur3!",
                "-h127.0.0.1",
                "-e",
                "SELECT CURRENT_USER()",
            ],
        )
        .await
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "acme_admin@%");
    rc.shutdown().await;
}

on_both_engines!(the_acme_database_runs_as_a_real_pod_and_is_ready_to_use);

const SESSION: &str = "appdb-test/session:latest";

fn job(name: &str, script: &str, backoff: u32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n  backoffLimit: {backoff}\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: {SESSION}\n        command: [sh, -c, {script:?}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_deployments_and_pods_report_what_their_processes_do() {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;

    // Jobs: success, and failure after the backoff limit, from real exit codes.
    apply(c, &job("works", "echo finished; exit 0", 0)).await;
    apply(c, &job("fails", "echo broken >&2; exit 3", 1)).await;
    c.ok(&[
        "wait",
        "--for=condition=Complete",
        "job/works",
        "-n",
        "acme",
        "--timeout=60s",
    ])
    .await;
    c.ok(&[
        "wait",
        "--for=condition=Failed",
        "job/fails",
        "-n",
        "acme",
        "--timeout=60s",
    ])
    .await;
    assert_eq!(rc.jsonpath("acme", "job/fails", "{.status.failed}").await, "2");
    let codes = c
        .ok(&[
            "get",
            "pods",
            "-n",
            "acme",
            "-l",
            "job-name=fails",
            "-o",
            "jsonpath={.items[*].status.containerStatuses[0].state.terminated.exitCode}",
        ])
        .await;
    assert_eq!(codes.trim(), "3 3");

    // An image the node cannot pull leaves its pod waiting, as a cluster would.
    apply(
        c,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: miner, namespace: acme}\nspec:\n  containers:\n  - {name: main, image: evil.example/cryptominer:1}\n",
    )
    .await;
    eventually(30, "ErrImagePull", || async {
        (rc.jsonpath(
            "acme",
            "pod/miner",
            "{.status.containerStatuses[0].state.waiting.reason}",
        )
        .await
            == "ErrImagePull")
            .then_some(())
    })
    .await;

    // A container that exits is restarted (restartPolicy Always), and its restarts are counted.
    apply(
        c,
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: crash, namespace: acme}}\nspec:\n  containers:\n  - {{name: main, image: {SESSION}, command: [sh, -c, 'echo started; sleep 1; exit 1']}}\n"),
    )
    .await;
    eventually(60, "a restart counted", || async {
        (rc.jsonpath("acme", "pod/crash", "{.status.containerStatuses[0].restartCount}")
            .await
            .parse::<u32>()
            .unwrap_or(0)
            >= 1)
            .then_some(())
    })
    .await;
    // kubectl logs, through the API server's pods/log, shows the container's output across its restarts.
    let log = c.ok(&["logs", "crash", "-n", "acme"]).await;
    assert!(log.matches("started").count() >= 2, "{log}");

    // httpGet readiness probes, on a named port: a server answering 200 makes its container ready, a 404 does not.
    // With two containers, kubectl logs takes -c.
    let server = |path: &str| {
        format!(
            "command: [sh, -c, 'echo serving; exec /usr/bin/python3 -m http.server 8080 --bind 0.0.0.0']\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe:\n      httpGet: {{path: {path}, port: http}}\n      periodSeconds: 1"
        )
    };
    apply(
        c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pair, namespace: acme}}\nspec:\n  containers:\n  - name: first\n    image: {SESSION}\n    command: [sh, -c, 'echo one; echo two; exec sleep 3600']\n  - name: web\n    image: {SESSION}\n    {}\n",
            server("/")
        ),
    )
    .await;
    apply(
        c,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: missing, namespace: acme}}\nspec:\n  containers:\n  - name: web\n    image: {SESSION}\n    {}\n",
            server("/no-such-page")
        ),
    )
    .await;
    c.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/pair",
        "-n",
        "acme",
        "--timeout=60s",
    ])
    .await;
    eventually(30, "the 404 server is probed", || async {
        let log = c.kubectl(&["logs", "missing", "-n", "acme"]).await;
        String::from_utf8_lossy(&log.stdout)
            .contains("GET /no-such-page")
            .then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        rc.jsonpath("acme", "pod/missing", "{.status.containerStatuses[0].ready}")
            .await,
        "false",
        "a 404 is a failed probe"
    );
    // Without -c, kubectl picks the first container and says so.
    let default = c.kubectl(&["logs", "pair", "-n", "acme"]).await;
    assert!(default.status.success());
    assert_eq!(String::from_utf8_lossy(&default.stdout), "one\ntwo\n");
    assert!(String::from_utf8_lossy(&default.stderr).contains("Defaulted container \"first\""));
    assert_eq!(
        c.ok(&["logs", "pair", "-n", "acme", "-c", "first", "--tail=1"])
            .await
            .trim(),
        "two"
    );
    let web = c.ok(&["logs", "pair", "-n", "acme", "-c", "web"]).await;
    assert!(
        web.contains("serving") && web.contains("\"GET / HTTP/1.1\" 200"),
        "{web}"
    );

    // A Deployment with a readiness probe: Ready only once the probe passes; a Recreate rollout stops the old pod
    // (SIGTERM to its PID 1) before the new one starts.
    let deployment = |version: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: acme}}\nspec:\n  replicas: 1\n  strategy: {{type: Recreate}}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 5\n      containers:\n      - name: main\n        image: {SESSION}\n        env: [{{name: VERSION, value: '{version}'}}]\n        command: [sh, -c, 'trap \"echo stopping $VERSION; exit 0\" TERM; sleep 2; touch /tmp/ready-$VERSION; while true; do sleep 0.2; done']\n        readinessProbe:\n          exec: {{command: [test, -f, /tmp/ready-{version}]}}\n          periodSeconds: 1\n"
        )
    };
    apply(c, &deployment("v1")).await;
    c.ok(&["rollout", "status", "deployment/web", "-n", "acme", "--timeout=60s"])
        .await;
    let first = c
        .ok(&[
            "get",
            "pods",
            "-n",
            "acme",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .await;
    apply(c, &deployment("v2")).await;
    c.ok(&["rollout", "status", "deployment/web", "-n", "acme", "--timeout=60s"])
        .await;
    let now = c
        .ok(&[
            "get",
            "pods",
            "-n",
            "acme",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    assert!(
        !now.contains(first.trim()) && !now.trim().is_empty(),
        "rolled: {first} → {now}"
    );
    assert_eq!(
        rc.jsonpath("acme", "deploy/web", "{.status.updatedReplicas}").await,
        "1"
    );
    // The old pod got SIGTERM at its PID 1 and ended on it.
    let old_log =
        std::fs::read_to_string(rc.dir.path().join(format!("pods/acme_{}/main.log", first.trim()))).unwrap_or_default();
    assert!(old_log.contains("stopping v1"), "{old_log}");
    rc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_by_dns_name_and_the_api_server_with_their_service_account() {
    let rc = RealCluster::start().await;
    let c = &rc.c;
    apply(c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    // Two web pods behind a Service whose port differs from theirs (targetPort by name).
    apply(
        c,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: acme}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: main\n        image: {SESSION}\n        command: [sh, -c, 'mkdir -p /tmp/www-$HOSTNAME && echo $HOSTNAME > /tmp/www-$HOSTNAME/index.html && exec python3 -m http.server 8080 --directory /tmp/www-$HOSTNAME']\n        ports: [{{name: http, containerPort: 8080}}]\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: acme}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
        ),
    )
    .await;
    c.ok(&["rollout", "status", "deployment/web", "-n", "acme", "--timeout=60s"])
        .await;
    apply(
        c,
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: acme}}\nspec:\n  containers:\n  - {{name: main, image: {SESSION}}}\n"),
    )
    .await;
    eventually(60, "the client pod runs", || async {
        (rc.jsonpath("acme", "pod/client", "{.status.phase}").await == "Running").then_some(())
    })
    .await;
    // By the short name (the pod's search path), through the ClusterIP, to both pods over time.
    let fetch =
        "import urllib.request; print(urllib.request.urlopen('http://web/', timeout=5).read().decode().strip())";
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let out = rc
            .kubelet
            .exec("acme", "client", "main", &["python3", "-c", fetch])
            .await
            .expect("exec");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        answered.insert(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        if answered.len() == 2 {
            break;
        }
    }
    assert_eq!(
        answered.len(),
        2,
        "both endpoints answer through the Service: {answered:?}"
    );
    let out = rc
        .kubelet
        .exec(
            "acme",
            "client",
            "main",
            &["getent", "hosts", "web.acme.svc.cluster.local"],
        )
        .await
        .expect("exec");
    let cluster_ip = rc.jsonpath("acme", "svc/web", "{.spec.clusterIP}").await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&cluster_ip), "{out:?}");
    // The API server at https://kubernetes.default.svc with the service account's CA and token (from TokenRequest):
    // the namespace's default account may do nothing until a Role says so.
    let api = "import ssl, urllib.request, urllib.error\nd='/var/run/secrets/kubernetes.io/serviceaccount/'\nctx=ssl.create_default_context(cafile=d+'ca.crt')\nreq=urllib.request.Request('https://kubernetes.default.svc/api/v1/namespaces/acme/pods/client', headers={'Authorization': 'Bearer '+open(d+'token').read()})\ntry:\n    print(urllib.request.urlopen(req, context=ctx, timeout=5).read().decode())\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())";
    let out = rc
        .kubelet
        .exec("acme", "client", "main", &["python3", "-c", api])
        .await
        .expect("exec");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "User \\\"system:serviceaccount:acme:default\\\" cannot get resource \\\"pods\\\" in API group \\\"\\\" in the namespace \\\"acme\\\""
        ),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    apply(
        c,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: pod-reader, namespace: acme}\nrules:\n- {apiGroups: [\"\"], resources: [pods], verbs: [get]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: default-reads-pods, namespace: acme}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}\nsubjects:\n- {kind: ServiceAccount, name: default}\n",
    )
    .await;
    let out = rc
        .kubelet
        .exec("acme", "client", "main", &["python3", "-c", api])
        .await
        .expect("exec");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"name\":\"client\""),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The Service's EndpointSlice lists both pods, ready, on their container port (targetPort by name).
    let slice = |path: &'static str| {
        let c = &c;
        async move {
            c.ok(&[
                "get",
                "endpointslices.discovery.k8s.io",
                "-n",
                "acme",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                &format!("jsonpath={path}"),
            ])
            .await
        }
    };
    let pod_ips = c
        .ok(&[
            "get",
            "pods",
            "-n",
            "acme",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .await;
    let mut expected: Vec<&str> = pod_ips.split_whitespace().collect();
    expected.sort();
    let listed = slice("{.items[0].endpoints[*].addresses[0]}").await;
    let mut listed: Vec<&str> = listed.split_whitespace().collect();
    listed.sort();
    assert_eq!(listed, expected);
    assert_eq!(slice("{.items[0].endpoints[*].conditions.ready}").await, "true true");
    assert_eq!(slice("{.items[0].ports[0].port}").await, "8080");
    // A Service whose pods are gone refuses at once.
    c.ok(&[
        "patch",
        "deployment/web",
        "-n",
        "acme",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":0}}"#,
    ])
    .await;
    eventually(30, "connections refused", || async {
        let out = rc
            .kubelet
            .exec("acme", "client", "main", &["python3", "-c", fetch])
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stderr)
            .contains("Connection refused")
            .then_some(())
    })
    .await;
    eventually(30, "the EndpointSlice follows: no endpoints", || async {
        slice("{.items[0].endpoints[*].addresses[0]}")
            .await
            .trim()
            .is_empty()
            .then_some(())
    })
    .await;
    rc.shutdown().await;
}
