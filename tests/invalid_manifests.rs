//! The corpus of invalid manifests in `tests/invalid/` (each file's first line says what must happen): refused at
//! admission with a specific message, or accepted and then `Ready=False` with a specific reason. None ever becomes
//! Ready, and the operator keeps running through all of them.

mod support;

use std::time::Duration;

use support::{Cluster, apply, free_port, get, mark_statefulset_ready, spawn_operator, wait_ready_to_use};

enum Expect {
    Refused(String),
    Reason(String),
}

fn corpus() -> Vec<(String, Expect, String)> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir("tests/invalid").expect("tests/invalid") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read a case");
        let header = text.lines().next().unwrap_or_default();
        let expect = if let Some(m) = header.strip_prefix("# expect refused: ") {
            Expect::Refused(m.to_owned())
        } else if let Some(r) = header.strip_prefix("# expect reason: ") {
            Expect::Reason(r.to_owned())
        } else {
            panic!(
                "{}: the first line must be `# expect refused: …` or `# expect reason: …`",
                path.display()
            );
        };
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        cases.push((name, expect, text));
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    cases
}

fn kind_of(text: &str) -> &'static str {
    for (kind, short) in [
        ("\"PrivateNetwork\"", "pnet"),
        ("\"AppDatabase\"", "adb"),
        ("\"VpnConnection\"", "vpn"),
        ("\"DatabaseMigration\"", "dbmig"),
    ] {
        if text.contains(kind) {
            return short;
        }
    }
    panic!("unknown kind in {text}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_invalid_manifest_is_refused_or_stalls_with_its_reason() {
    let cases = corpus();
    assert!(
        cases.len() >= 50,
        "the corpus must hold at least 50 cases, it holds {}",
        cases.len()
    );
    let c = Cluster::start().await;
    c.install_crds().await;
    let port = free_port();
    let mut op = spawn_operator(&c, port, &[]).await;
    apply(&c, "apiVersion: v1\nkind: Namespace\nmetadata: {name: acme}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod, namespace: acme}\nspec: {cidr: 10.20.30.64/26}\n").await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: PrivateNetwork\nmetadata: {name: prod-2026, namespace: acme}\nspec: {}\n").await;
    apply(&c, "apiVersion: v1\nkind: Secret\nmetadata: {name: acme-db-admin, namespace: acme}\nstringData: {password: Valid-Passw0rd}\n").await;
    apply(
        &c,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: weak-passwords, namespace: acme}\nstringData:\n  short: abc\n  space: has space 123\n  at: user@host1234\n  slash: a/b/c/d/e/f/g\n  quote: 'say\"hello\"1'\n",
    )
    .await;
    apply(&c, "apiVersion: appdb.dev/v1alpha1\nkind: AppDatabase\nmetadata: {name: orders, namespace: acme}\nspec:\n  network: prod\n  admin: {username: acme_admin, passwordSecretRef: {name: acme-db-admin, key: password}}\n  storage: {size: 1Gi}\n").await;
    mark_statefulset_ready(&c, "acme", "orders").await;
    wait_ready_to_use(&c, "orders").await;

    let mut failures = Vec::new();
    let mut waiting = Vec::new();
    for (name, expect, text) in &cases {
        let out = c
            .kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(text))
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match expect {
            Expect::Refused(message) => {
                if out.status.success() {
                    failures.push(format!("{name}: accepted, expected refusal with {message:?}"));
                } else if !stderr.contains(message.as_str()) {
                    failures.push(format!("{name}: refused without {message:?}: {stderr}"));
                }
            }
            Expect::Reason(reason) => {
                if out.status.success() {
                    waiting.push((name.clone(), kind_of(text), reason.clone()));
                } else {
                    failures.push(format!("{name}: refused ({stderr}), expected reason {reason}"));
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (name, kind, reason) in &waiting {
        let what = format!("{kind}/{name}");
        loop {
            let status = get(&c, &what, r#"{.status.conditions[?(@.type=="Ready")].status}"#).await;
            let got = get(&c, &what, r#"{.status.conditions[?(@.type=="Ready")].reason}"#).await;
            if status == "False" && got == *reason {
                break;
            }
            if status == "True" || tokio::time::Instant::now() > deadline {
                failures.push(format!(
                    "{what}: Ready={status:?} reason {got:?}, expected False/{reason}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // A while later none has become Ready, and the operator still runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, kind, _) in &waiting {
        let status = get(
            &c,
            &format!("{kind}/{name}"),
            r#"{.status.conditions[?(@.type=="Ready")].status}"#,
        )
        .await;
        if status != "False" {
            failures.push(format!("{kind}/{name}: Ready={status:?} later"));
        }
    }
    assert!(op.try_wait().expect("operator state").is_none(), "the operator exited");
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz");
    assert!(ready.status().is_success());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} invalid manifests: {} refused at admission, {} stalled with their reason",
        cases.len(),
        cases.len() - waiting.len(),
        waiting.len()
    );
}
