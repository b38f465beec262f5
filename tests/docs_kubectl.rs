//! The documents' kubectl commands against the test API server. First kubectl's generator commands and `auth can-i`
//! in detail (kubectl sends these as protobuf, with the kubeconfig's token over TLS; the chart's ClusterRoles for
//! people are installed first, as `helm install` would, and RBAC answers with what they grant, and what it does not).
//! Then every `kubectl` line of README.md, docs/, the gitops example and NOTES.txt, as written.

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

/// Commands the documents show that cannot run here, and why. Every other documented `kubectl` line runs below.
const NOT_RUN_HERE: &[(&str, &str)] = &[(
    "kubectl krew install ",
    "needs krew and the network; tests/workflows.rs holds the manifest it installs to the release's archives",
)];

/// Every line of the documents that is a `kubectl` command (after a `$ ` prompt or an environment prefix), with
/// the document's name. NOTES.txt as Helm renders it.
fn every_documented_command() -> Vec<(String, String)> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut docs: Vec<(String, String)> = vec![
        (
            "README.md".into(),
            std::fs::read_to_string(format!("{root}/README.md")).expect("README"),
        ),
        (
            "examples/gitops/README.md".into(),
            std::fs::read_to_string(format!("{root}/examples/gitops/README.md")).expect("gitops README"),
        ),
        ("NOTES.txt (rendered)".into(), support::chart_notes().to_owned()),
    ];
    let mut pages: Vec<_> = std::fs::read_dir(format!("{root}/docs"))
        .expect("docs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    for page in pages {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        docs.push((name, std::fs::read_to_string(&page).expect("doc")));
    }
    let mut out = Vec::new();
    for (doc, text) in docs {
        for line in text.lines() {
            let line = line.trim().trim_start_matches("$ ");
            let command = line
                .split_whitespace()
                .find(|w| !(w.contains('=') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())));
            if command == Some("kubectl") {
                out.push((doc.clone(), line.to_owned()));
            }
        }
    }
    out
}

/// When in a reader's session a command makes sense: the namespace, the CRDs, the customer's objects, then
/// everything that reads or changes them.
fn phase(line: &str) -> u8 {
    if line.contains("create namespace") {
        0
    } else if line.contains("-f crds/") && !line.contains("examples/") {
        1
    } else if line.contains("examples/acme/") {
        2
    } else {
        3
    }
}

/// Every `kubectl` command of README.md, docs/, the gitops example and NOTES.txt runs as written (through `sh`,
/// from a folder where `crds/` and `examples/` are the project's, with the plugin on PATH) against the test API
/// server, the real operator and the chart's objects, in the order a reader would run them. Only the commands in
/// `NOT_RUN_HERE` are skipped, each with its reason; a new documented command fails this test until it runs here or
/// is listed there. The one change to a command: README's `KUBECONFIG=/tmp/kubeconfig` is the test API server's
/// kubeconfig, which the documented `test-apiserver --kubeconfig /tmp/kubeconfig` writes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_kubectl_command_runs_as_written() {
    let c = Cluster::start().await;
    let root = env!("CARGO_MANIFEST_DIR");
    let cwd = c.dir.path().join("reader");
    std::fs::create_dir_all(&cwd).unwrap();
    for dir in ["crds", "examples"] {
        std::os::unix::fs::symlink(format!("{root}/{dir}"), cwd.join(dir)).unwrap();
    }
    let plugin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-appdb"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{root}/plugins:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubeconfig = c.kubeconfig();
    let shell = |line: &str| {
        let line = line.replace(
            "KUBECONFIG=/tmp/kubeconfig",
            &format!("KUBECONFIG={}", kubeconfig.display()),
        );
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(line)
            .current_dir(&cwd)
            .env("PATH", &path)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", c.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    };

    let mut commands = every_documented_command();
    assert!(commands.len() >= 15, "the documents show kubectl: {commands:?}");
    commands.retain(|(doc, line)| {
        let skipped = NOT_RUN_HERE.iter().any(|(prefix, _)| line.starts_with(prefix));
        if skipped {
            eprintln!("not run here: {doc}: {line}");
        }
        !skipped
    });
    commands.sort_by_key(|(_, line)| phase(line));
    commands.dedup_by(|a, b| a.1 == b.1);

    let mut started = false;
    let mut ran = Vec::new();
    for (doc, line) in &commands {
        eprintln!("{doc}: {line}");
        ran.push(line.clone());
        if phase(line) == 3 && !started {
            started = true;
            bring_the_customer_up(&c).await;
        }
        let long_running = [
            ("kubectl appdb tunnel ", "connect to tcp://"),
            ("kubectl port-forward ", "Forwarding from 127.0.0.1:"),
        ];
        if let Some((_, says)) = long_running.iter().find(|(prefix, _)| line.starts_with(prefix)) {
            // Runs until interrupted: it must say where to connect, then it is stopped as a reader would (Ctrl-C).
            // `exec`: the shell becomes kubectl (which execs the plugin), so stopping the child stops the tunnel.
            let mut child = shell(&format!("exec {line}")).spawn().expect("start the tunnel");
            let stdout = child.stdout.take().unwrap();
            let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
            let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line()).await;
            let _ = child.start_kill();
            let first = first.ok().and_then(|l| l.ok()).flatten().unwrap_or_default();
            let stderr = child.wait_with_output().await.map(|o| o.stderr).unwrap_or_default();
            assert!(
                first.contains(says),
                "{doc}: `{line}` printed {first:?}: {}",
                String::from_utf8_lossy(&stderr)
            );
            continue;
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), shell(line).output())
            .await
            .unwrap_or_else(|_| panic!("{doc}: `{line}` did not finish"))
            .expect("run sh");
        assert!(
            out.status.success(),
            "{doc}: `{line}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if line.contains("> seattle-cisco.txt") {
            let file = std::fs::read_to_string(cwd.join("seattle-cisco.txt")).expect("the device file");
            assert!(file.contains("crypto ikev2"), "{file}");
        }
    }
    // The kinds of command a reader meets, each run at least once.
    for kind in [
        "kubectl create namespace",
        "kubectl apply --server-side -f crds/",
        "kubectl apply -f examples/acme/",
        "rollout status",
        " logs ",
        "kubectl auth can-i",
        "kubectl label namespace",
        "kubectl appdb status",
        "kubectl appdb vpn-config",
        "kubectl appdb tunnel",
        "kubectl port-forward",
    ] {
        assert!(
            ran.iter().any(|l| l.contains(kind)),
            "no documented `{kind}` ran: {ran:?}"
        );
    }
}

/// What a running cluster would have done by the time a reader checks: the chart installed and its operator
/// Deployment available (with a pod whose log `kubectl logs` reads), the operator reconciling, the database's
/// StatefulSet ready with a ready pod, and the VPN tunnels given outside addresses.
async fn bring_the_customer_up(c: &Cluster) {
    let kinds: Vec<String> = support::chart_objects()
        .iter()
        .filter_map(|o| o["kind"].as_str().map(str::to_owned))
        .collect();
    let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
    apply_chart(c, &kinds).await;
    let _operator = support::spawn_operator(c, support::free_port(), &["--allow-documentation-gateways", "true"]).await;
    let kubelet = appdb_testkit::kubelet::Kubelet::new(kube::Client::try_from(c.server.admin_config()).unwrap());
    let selector = |kind: &str, ns: &str, name: &str, path: &str| {
        let (kind, ns, name, path) = (kind.to_owned(), ns.to_owned(), name.to_owned(), path.to_owned());
        async move {
            let labels = c
                .ok(&["get", &kind, &name, "-n", &ns, "-o", &format!("jsonpath={path}")])
                .await;
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&labels).expect("labels")
        }
    };
    // The operator's pod, for `kubectl logs deployment/…`.
    let labels = selector(
        "deployment",
        "appdb-system",
        "appdb-operator",
        "{.spec.selector.matchLabels}",
    )
    .await;
    ready_pod(c, "appdb-system", "appdb-operator-7c9d-x2k4p", &labels).await;
    c.server.read_logs_with(std::sync::Arc::new(|_, pod, _| {
        Ok(format!("{{\"level\":\"INFO\",\"pod\":\"{pod}\"}}\n"))
    }));
    // What was last seen is printed as it changes, so a timeout says which object never came up.
    let last_seen = std::sync::Mutex::new(String::new());
    support::eventually(
        60,
        "the customer's objects, as a cluster would bring them up",
        || async {
            kubelet.play_once().await.ok()?;
            let service = c
                .kubectl(&["get", "svc", "orders", "-n", "acme", "-o", "jsonpath={.spec.selector}"])
                .await;
            if service.status.success()
                && !c
                    .kubectl(&["get", "pod", "orders-0", "-n", "acme"])
                    .await
                    .status
                    .success()
            {
                let labels: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&service.stdout).ok()?;
                ready_pod(c, "acme", "orders-0", &labels).await;
            }
            let config = c
                .kubectl(&[
                    "get",
                    "vpn",
                    "seattle",
                    "-n",
                    "acme",
                    "-o",
                    "jsonpath={.status.configSecret}",
                ])
                .await;
            let state = support::get(c, "adb/orders", "{.status.state}").await;
            let vpn_ready = support::try_get(
                c,
                "vpn/seattle",
                r#"{.status.conditions[?(@.type=="Ready")].reason}: {.status.conditions[?(@.type=="Ready")].message}"#,
            )
            .await
            .unwrap_or_else(|| "not created".into());
            // The example's migration is scheduled far ahead: applying the example must not move the database.
            let migration = support::try_get(c, "dbmig/orders-to-prod-2026", "{.status.state}")
                .await
                .unwrap_or_else(|| "not created".into());
            let seen = format!(
                "database state {state:?}, VPN configSecret {:?}, VPN Ready {vpn_ready:?}, migration {migration:?}",
                String::from_utf8_lossy(&config.stdout)
            );
            let mut last = last_seen.lock().unwrap();
            if *last != seen {
                println!("customer objects: {seen}");
                *last = seen;
            }
            (!String::from_utf8_lossy(&config.stdout).is_empty() && state == "Ready To Use" && migration == "Scheduled")
                .then_some(())
        },
    )
    .await;
}

async fn ready_pod(c: &Cluster, ns: &str, name: &str, labels: &serde_json::Map<String, serde_json::Value>) {
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "registry.example/main:1",
            // The database Service's named target port, which `kubectl port-forward svc/…` resolves on the pod.
            "ports": [{"name": "mysql", "containerPort": 3306}]}]}});
    support::apply(c, &pod.to_string()).await;
    c.ok(&[
        "patch",
        "pod",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}"#,
    ])
    .await;
}
