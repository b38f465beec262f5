//! The Argo CD health check (charts/appdb-operator/argocd/health.lua) run by a real Lua 5.1 interpreter on the test
//! cases in Argo's own format (health_test.yaml: object in, expected status and message out).

use std::{io::Write, path::Path, process::Command};

use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/appdb-operator/argocd");

/// A Lua table constructor for a JSON value (what Argo CD hands the script as `obj`).
fn lua(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("[{k:?}] = {}", lua(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn run(script: &str, object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal function check()\n{script}\nend\nlocal hs = check()\nio.write(hs.status, \"\\t\", hs.message)\n",
        lua(object)
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("lua5.1 is required (apt-get install lua5.1; scripts/test.sh does): {e}"));
    child.stdin.take().unwrap().write_all(program.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "lua failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\t').expect("status\tmessage");
    (status.to_owned(), message.to_owned())
}

#[test]
fn health_check_matches_every_test_case() {
    let script = std::fs::read_to_string(Path::new(DIR).join("health.lua")).unwrap();
    let tests: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(Path::new(DIR).join("health_test.yaml")).unwrap()).unwrap();
    let cases = tests["tests"].as_array().expect("tests");
    assert!(cases.len() >= 15);
    for case in cases {
        let input = case["inputPath"].as_str().unwrap();
        let object: Value =
            serde_json::from_str(&std::fs::read_to_string(Path::new(DIR).join(input)).unwrap()).unwrap();
        let (status, message) = run(&script, &object);
        assert_eq!(status, case["healthStatus"]["status"].as_str().unwrap(), "{input}");
        assert_eq!(message, case["healthStatus"]["message"].as_str().unwrap(), "{input}");
    }
}

/// Both ways of installing the check, the argocd-cm snippet and the argo-cd chart's values, carry health.lua as it
/// is, for every kind.
#[test]
fn the_argocd_cm_snippet_and_the_argo_cd_chart_values_embed_the_same_script_for_every_kind() {
    let script = std::fs::read_to_string(Path::new(DIR).join("health.lua")).unwrap();
    let read = |file: &str| -> Value {
        serde_saphyr::from_str(&std::fs::read_to_string(Path::new(DIR).join(file)).unwrap()).unwrap()
    };
    let cm = read("argocd-cm.yaml");
    let chart_values = read("argo-cd-values.yaml");
    for kind in ["PrivateNetwork", "AppDatabase", "VpnConnection", "DatabaseMigration"] {
        let key = format!("resource.customizations.health.appdb.dev_{kind}");
        for (file, embedded) in [
            ("argocd-cm.yaml", &cm["data"][&key]),
            ("argo-cd-values.yaml", &chart_values["configs"]["cm"][&key]),
        ] {
            let embedded = embedded.as_str().unwrap_or_else(|| panic!("{file}: {kind} missing"));
            assert_eq!(
                embedded.trim_end(),
                script.trim_end(),
                "{kind}: {file} drifted from health.lua"
            );
        }
    }
}
