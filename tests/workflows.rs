//! The CI workflows, the kind end-to-end script and the image build, checked as files: no runner, Docker or kind
//! exists here, so this test holds them to what a user's CI relies on. Pinned tool versions; a kind cluster with
//! room for both tunnels; assertions that fail when they should; logs kept when a run fails; `.ci/run` in a job;
//! both images published for amd64 and arm64 under the names and the tag the chart uses, from one build.

use std::{path::Path, process::Command};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn steps(workflow: &Value, job: &str) -> Vec<Value> {
    workflow["jobs"][job]["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("job {job} has steps"))
        .clone()
}

fn step_using<'a>(steps: &'a [Value], action: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(&format!("{action}@"))))
        .unwrap_or_else(|| panic!("a step uses {action}"))
}

/// `vMAJOR.MINOR.PATCH`, the form that pins a tool to one release.
fn is_exact_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn chart_app_version() -> String {
    let chart = yaml("charts/appdb-operator/Chart.yaml");
    chart["appVersion"].as_str().expect("appVersion").to_owned()
}

/// Every action a workflow uses is pinned to a release tag (`@vN` at least), never a branch.
#[test]
fn every_action_is_pinned_to_a_release() {
    for file in [".github/workflows/e2e.yml", ".github/workflows/release.yml"] {
        let workflow = yaml(file);
        for (job, spec) in workflow["jobs"].as_object().expect("jobs") {
            for step in spec["steps"].as_array().expect("steps") {
                if let Some(uses) = step["uses"].as_str() {
                    let (_, reference) = uses.split_once('@').unwrap_or_else(|| panic!("{file} {job}: {uses}"));
                    assert!(
                        reference.starts_with('v') && reference[1..].split('.').all(|p| p.parse::<u32>().is_ok()),
                        "{file} {job}: {uses} is not pinned to a release"
                    );
                }
            }
            assert!(spec["timeout-minutes"].as_u64().is_some(), "{file} {job}: no timeout");
        }
    }
}

/// The e2e workflow: pinned kind, node image and Helm 4; the project's own CI in its own job; the failed run's logs
/// uploaded from where the script writes them.
#[test]
fn the_e2e_workflow_pins_its_tools_runs_the_suite_and_keeps_failed_runs_logs() {
    let workflow = yaml(".github/workflows/e2e.yml");
    let ci = steps(&workflow, "ci");
    assert!(
        ci.iter()
            .any(|s| s["run"].as_str().is_some_and(|r| r.trim() == "./.ci/run")),
        "a job runs .ci/run"
    );
    let kind = steps(&workflow, "kind");
    let kind_version = step_using(&kind, "helm/kind-action")["with"]["version"]
        .as_str()
        .expect("kind-action has a version")
        .to_owned();
    assert!(is_exact_version(&kind_version), "kind {kind_version}");
    let helm_version = step_using(&kind, "azure/setup-helm")["with"]["version"]
        .as_str()
        .expect("setup-helm has a version")
        .to_owned();
    assert!(
        is_exact_version(&helm_version) && helm_version.starts_with("v4."),
        "Helm 4, pinned: {helm_version}"
    );
    let e2e = kind
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("tests/e2e/kind.sh")))
        .expect("a step runs tests/e2e/kind.sh");
    let node_image = e2e["env"]["KIND_NODE_IMAGE"].as_str().expect("KIND_NODE_IMAGE pinned");
    let (_, node_version) = node_image.rsplit_once(':').expect("a tag");
    assert!(is_exact_version(node_version), "{node_image}");
    // The chart says kubeVersion >= 1.33: the cluster must be one it installs on.
    let minor: u32 = node_version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("minor");
    assert!(
        node_version.starts_with("v1.") && minor >= 33,
        "{node_image} is older than the chart's kubeVersion"
    );
    let artifacts = e2e["env"]["ARTIFACTS"].as_str().expect("ARTIFACTS set for the script");
    let upload = step_using(&kind, "actions/upload-artifact");
    assert_eq!(upload["if"], "failure()", "uploaded when the run failed");
    let path = upload["with"]["path"].as_str().expect("path").trim_end_matches('/');
    assert!(
        artifacts.ends_with(path),
        "uploads {path}, the script writes to {artifacts}"
    );
}

/// The kind script: valid bash under `set -euo pipefail`; no assertion that cannot fail (`! cmd` is exempt from
/// `set -e`, `|| true` swallows); a multi-node cluster so both tunnels are scheduled, and both awaited on different
/// nodes; logs collected on failure.
#[test]
fn the_kind_script_asserts_for_real_and_awaits_both_tunnels() {
    let script = read("tests/e2e/kind.sh");
    let syntax = Command::new("bash")
        .args(["-n", &format!("{ROOT}/tests/e2e/kind.sh")])
        .output()
        .expect("bash");
    assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
    assert!(script.contains("set -euo pipefail"));
    let mut in_collect = false;
    for (n, line) in script.lines().enumerate() {
        let code = line.trim();
        if code.starts_with("collect()") {
            in_collect = true;
        }
        if in_collect && code == "}" {
            in_collect = false;
        }
        if code.starts_with('#') {
            continue;
        }
        assert!(
            !code.starts_with("! ") && !code.contains("; ! ") && !code.contains("&& ! "),
            "line {}: a negated command cannot fail under set -e: {code}",
            n + 1
        );
        if !in_collect {
            assert!(
                !code.contains("|| true") || code.starts_with("kind delete"),
                "line {}: `|| true` outside the log collection: {code}",
                n + 1
            );
        }
    }
    assert!(
        script.contains("trap finish EXIT") && script.contains("collect"),
        "logs on failure"
    );
    for tunnel in ["seattle-tunnel1", "seattle-tunnel2"] {
        assert!(
            script.contains(&format!("rollout status deployment/{tunnel}")),
            "{tunnel} is awaited"
        );
    }
    assert!(script.contains("--config tests/e2e/kind-config.yaml"));
    let config = yaml("tests/e2e/kind-config.yaml");
    let workers = config["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["role"] == "worker")
        .count();
    assert!(
        workers >= 2,
        "two tunnels with required anti-affinity need two schedulable nodes"
    );
}

/// The release: both images, amd64 and arm64, under the chart's image names, tagged with the chart's appVersion
/// (the workflow refuses a tag that differs), from one bake whose Rust build stage compiles once per architecture on
/// the builder's own platform.
#[test]
fn the_release_publishes_both_images_as_the_chart_names_them_from_one_build() {
    let release = yaml(".github/workflows/release.yml");
    let images = steps(&release, "images");
    let bake = step_using(&images, "docker/bake-action");
    assert_eq!(bake["with"]["files"], "docker-bake.hcl");
    assert_eq!(bake["with"]["targets"], "release");
    assert_eq!(bake["with"]["push"], true);
    assert!(
        images.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("appVersion") && r.contains("exit 1"))),
        "the tag is checked against the chart's appVersion"
    );

    let hcl = read("docker-bake.hcl");
    let registry = hcl_default(&hcl, "REGISTRY");
    let values = yaml("charts/appdb-operator/values.yaml");
    let app_version = chart_app_version();
    let operator_image = values["image"]["repository"].as_str().expect("image.repository");
    let (gateway_repository, gateway_tag) = values["vpn"]["gatewayImage"]
        .as_str()
        .expect("vpn.gatewayImage")
        .rsplit_once(':')
        .expect("a tagged gateway image");
    assert_eq!(
        gateway_tag, app_version,
        "vpn.gatewayImage's tag follows the chart's appVersion"
    );
    for (target, repository) in [("operator", operator_image), ("vpn-gateway", gateway_repository)] {
        let block = hcl_block(&hcl, target);
        let tag = format!(
            "${{REGISTRY}}/{}:${{VERSION}}",
            repository.rsplit('/').next().expect("name")
        );
        assert_eq!(
            format!("{registry}/{}", repository.rsplit('/').next().expect("name")),
            repository,
            "{target}: the registry the chart pulls from"
        );
        assert!(block.contains(&tag), "{target} is tagged {tag}:\n{block}");
        assert!(
            block.contains(&format!("target     = \"{target}\"")),
            "{target}: its Dockerfile stage"
        );
        let release = hcl_block(&hcl, &format!("{target}-release"));
        assert!(
            release.contains("\"linux/amd64\"") && release.contains("\"linux/arm64\""),
            "{target}-release: amd64 and arm64"
        );
    }
    assert!(hcl_block(&hcl, "release").contains("\"operator-release\", \"vpn-gateway-release\""));

    let dockerfile = read("Dockerfile");
    assert_eq!(
        dockerfile.matches("cargo build").count(),
        1,
        "one Rust build for both images"
    );
    assert!(
        dockerfile.contains("FROM --platform=$BUILDPLATFORM rust:"),
        "compiled natively, not emulated"
    );
    assert_eq!(dockerfile.matches("COPY --from=build /out/appdb-operator").count(), 2);
    for stage in ["AS vpn-gateway", "AS operator"] {
        assert!(dockerfile.contains(stage), "{stage}");
    }
}

/// The body of `target "name" { … }` or `group "name" { … }` in a bake file.
fn hcl_block<'a>(hcl: &'a str, name: &str) -> &'a str {
    let start = ["target", "group"]
        .iter()
        .find_map(|kind| hcl.find(&format!("{kind} \"{name}\" {{")))
        .unwrap_or_else(|| panic!("no block {name}"));
    let end = hcl[start..].find("\n}").expect("closed block");
    &hcl[start..start + end]
}

fn hcl_default(hcl: &str, variable: &str) -> String {
    let block = &hcl[hcl.find(&format!("variable \"{variable}\"")).expect("variable")..];
    let line = block
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .expect("default");
    line.split('"').nth(1).expect("quoted").to_owned()
}

/// The kubectl plugin is released for linux and darwin, amd64 and arm64, and the krew manifest installs exactly
/// what the release job packs: every placeholder is one the job fills in, every URI is an archive it attaches, and
/// the completion script travels with the binary.
#[test]
fn the_release_builds_the_plugin_for_four_platforms_and_the_krew_manifest_matches_the_archives() {
    let release = yaml(".github/workflows/release.yml");
    let plugin = &release["jobs"]["plugin"];
    let platforms: Vec<(String, String, String)> = plugin["strategy"]["matrix"]["include"]
        .as_array()
        .expect("a platform matrix")
        .iter()
        .map(|p| {
            (
                p["os"].as_str().unwrap().to_owned(),
                p["arch"].as_str().unwrap().to_owned(),
                p["target"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut pairs: Vec<String> = platforms.iter().map(|(os, arch, _)| format!("{os}_{arch}")).collect();
    pairs.sort();
    assert_eq!(pairs, ["darwin_amd64", "darwin_arm64", "linux_amd64", "linux_arm64"]);
    for (os, arch, target) in &platforms {
        let expected_arch = if arch == "amd64" { "x86_64" } else { "aarch64" };
        assert!(target.starts_with(expected_arch), "{os}/{arch}: {target}");
        assert!(
            target.contains(if os == "linux" { "linux" } else { "apple-darwin" }),
            "{target}"
        );
    }
    let plugin_steps = steps(&release, "plugin");
    let package = plugin_steps
        .iter()
        .find(|s| s["name"] == "Package")
        .and_then(|s| s["run"].as_str())
        .expect("a Package step");
    let build = plugin_steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("cargo build")))
        .and_then(|s| s["run"].as_str())
        .expect("a build step");
    assert!(build.contains("--locked") && build.contains("--bin kubectl-appdb") && build.contains("--release"));

    let krew = steps(&release, "krew");
    let render = krew
        .iter()
        .filter_map(|s| s["run"].as_str())
        .find(|r| r.contains("envsubst"))
        .expect("the manifest is rendered");
    assert!(release["jobs"]["krew"]["needs"] == "plugin");
    assert!(
        render.contains("grep") && render.contains("exit 1"),
        "an unfilled placeholder fails the job"
    );

    // Render the manifest as the job does (every ${NAME} it exports), with stand-in checksums.
    let template = read("plugins/appdb.yaml");
    let version = chart_app_version();
    let mut rendered = template.replace("${VERSION}", &version);
    for pair in &pairs {
        assert!(
            render.contains("SHA256_${platform}") && render.contains(pair.as_str()),
            "{pair}"
        );
        rendered = rendered.replace(&format!("${{SHA256_{pair}}}"), &"ab".repeat(32));
    }
    assert!(!rendered.contains("${"), "every placeholder is one the job fills in");
    let manifest: Value = serde_saphyr::from_str(&rendered).expect("the manifest is YAML");
    assert_eq!(manifest["apiVersion"], "krew.googlecontainertools.github.com/v1alpha2");
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(
        manifest["metadata"]["name"], "appdb",
        "krew names the plugin after kubectl-appdb"
    );
    assert_eq!(manifest["spec"]["version"], format!("v{version}"));
    assert!(manifest["spec"]["shortDescription"].as_str().unwrap().len() <= 60);
    let listed = manifest["spec"]["platforms"].as_array().expect("platforms");
    assert_eq!(listed.len(), 4);
    for platform in listed {
        let labels = &platform["selector"]["matchLabels"];
        let pair = format!(
            "{}_{}",
            labels["os"].as_str().unwrap(),
            labels["arch"].as_str().unwrap()
        );
        let archive = format!("kubectl-appdb_v{version}_{pair}.tar.gz");
        let uri = platform["uri"].as_str().unwrap();
        assert!(
            uri.ends_with(&format!("/releases/download/v{version}/{archive}")),
            "{uri}"
        );
        let sha = platform["sha256"].as_str().unwrap();
        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "{sha}");
        assert_eq!(platform["bin"], "kubectl-appdb");
        // Every file the manifest installs is one the Package step puts into the archive.
        let files: Vec<&str> = platform["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["from"].as_str().unwrap())
            .collect();
        assert!(files.contains(&"kubectl_complete-appdb"), "{files:?}");
        let tar = package.lines().find(|l| l.contains("tar ")).expect("a tar line");
        for file in files {
            assert!(tar.contains(file), "{file} is packed: {tar}");
        }
        assert!(package.contains("kubectl-appdb_v${version}_${{ matrix.os }}_${{ matrix.arch }}"));
    }
    // The completion script runs the binary's completion, and is executable.
    let script = read("plugins/kubectl_complete-appdb");
    assert!(script.starts_with("#!/bin/sh") && script.contains("exec kubectl-appdb __complete \"$@\""));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(Path::new(ROOT).join("plugins/kubectl_complete-appdb"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "executable");
}
