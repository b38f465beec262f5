//! `crds/` and the Helm chart's copy must say exactly what the Rust types generate.
//! Regenerate with `cargo run -- crds --out-dir crds && cargo run -- crds --out-dir charts/appdb-operator/crds`.

use std::path::Path;

fn assert_folder_matches(folder: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let expected = appdb_operator::crdgen::render_files().expect("render CRDs");
    for (name, yaml) in &expected {
        let path = dir.join(name);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == *yaml,
            "{} drifted from the Rust types; regenerate it (see tests/crds_drift.rs)",
            path.display()
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("read folder")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let mut names: Vec<String> = expected.into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(files, names, "{folder} holds files that no CRD generates");
}

#[test]
fn crds_folder_matches_the_code() {
    assert_folder_matches("crds");
}

#[test]
fn chart_crds_match_the_code() {
    assert_folder_matches("charts/appdb-operator/crds");
}

#[test]
fn every_kind_has_status_subresource_category_and_printer_columns() {
    for crd in appdb_operator::api::all_crds() {
        let kind = &crd.spec.names.kind;
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["appdb".to_string()][..]),
            "{kind}"
        );
        assert!(
            crd.spec.names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{kind} short name"
        );
        let version = &crd.spec.versions[0];
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.name == "Age")),
            "{kind}"
        );
        if kind != "NetworkAllocation" {
            assert!(
                version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{kind} status subresource"
            );
        }
    }
}

#[test]
fn every_schema_field_has_a_description() {
    fn walk(kind: &str, path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (key, child) in props {
                let child_path = format!("{path}.{key}");
                // metadata is described by Kubernetes itself.
                if child.get("description").is_none()
                    && child_path != ".metadata"
                    && !child_path.starts_with(".metadata")
                {
                    missing.push(format!("{kind}{child_path}"));
                }
                walk(kind, &child_path, child, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(kind, &format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in appdb_operator::api::all_crds() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        walk(&crd.spec.names.kind, "", &schema, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description (kubectl explain shows nothing): {missing:#?}"
    );
}
