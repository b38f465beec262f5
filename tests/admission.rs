//! Admission rules of the CRDs (schema + CEL), checked without a cluster: what `kubectl apply` would be told.

use appdb_operator::api::all_crds;
use appdb_testkit::schema::SchemaValidator;
use serde_json::{Value, json};

fn validator(kind: &str) -> SchemaValidator {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    let validator = SchemaValidator::new(serde_json::to_value(schema).expect("schema as JSON"));
    assert_eq!(
        validator.compile_errors(),
        Vec::<String>::new(),
        "{kind}: CEL rules must compile"
    );
    validator
}

fn object(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "appdb.dev/v1alpha1", "kind": kind, "metadata": {"name": "x", "namespace": "acme"}, "spec": spec})
}

fn network(spec: Value) -> Value {
    object("PrivateNetwork", spec)
}

fn database(patch: Value) -> Value {
    let mut spec = json!({
        "network": "prod",
        "admin": {"username": "appadmin", "passwordSecretRef": {"name": "acme-db-admin", "key": "password"}},
        "storage": {"size": "20Gi"}
    });
    merge(&mut spec, patch);
    object("AppDatabase", spec)
}

fn vpn(patch: Value) -> Value {
    let mut spec = json!({
        "network": "prod",
        "customerCidrs": ["192.168.10.0/24"],
        "customerGatewayAddress": "198.51.100.7"
    });
    merge(&mut spec, patch);
    object("VpnConnection", spec)
}

fn migration(patch: Value) -> Value {
    let mut spec = json!({"database": "orders", "targetNetwork": "prod-2026"});
    merge(&mut spec, patch);
    object("DatabaseMigration", spec)
}

fn merge(base: &mut Value, patch: Value) {
    if let (Some(b), Value::Object(p)) = (base.as_object_mut(), patch) {
        for (k, v) in p {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

fn messages(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    validator(kind)
        .validate(obj, old)
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[track_caller]
fn assert_refused(kind: &str, obj: Value, old: Option<Value>, expected: &str) {
    let msgs = messages(kind, &obj, old.as_ref());
    assert!(
        msgs.iter().any(|m| m.contains(expected)),
        "{kind} {obj}\nexpected a message containing {expected:?}, got {msgs:?}"
    );
}

#[track_caller]
fn assert_admitted(kind: &str, obj: Value, old: Option<Value>) {
    let msgs = messages(kind, &obj, old.as_ref());
    assert!(msgs.is_empty(), "{kind} {obj} must be admitted, got {msgs:?}");
}

// ---- valid objects ---------------------------------------------------------------------------------------------

#[test]
fn valid_objects_are_admitted() {
    let cases = [
        ("PrivateNetwork", network(json!({}))),
        (
            "PrivateNetwork",
            network(json!({"cidr": "10.20.30.64/26", "description": "Seattle"})),
        ),
        ("PrivateNetwork", network(json!({"cidr": "172.31.255.192/26"}))),
        ("PrivateNetwork", network(json!({"cidr": "192.168.0.0/26"}))),
        ("AppDatabase", database(json!({}))),
        (
            "AppDatabase",
            database(json!({"engine": "MariaDB", "version": "11.4", "dns": {"hostname": "db.acme.example.com"}})),
        ),
        (
            "AppDatabase",
            database(
                json!({"storage": {"size": "500Mi", "storageClassName": "fast"}, "resources": {"limits": {"memory": "1Gi", "cpu": 2}}}),
            ),
        ),
        (
            "AppDatabase",
            database(json!({"admin": {"username": "_ops_2", "passwordSecretRef": {"name": "s", "key": "pw"}}})),
        ),
        ("VpnConnection", vpn(json!({}))),
        (
            "VpnConnection",
            vpn(
                json!({"customerCidrs": ["10.1.0.0/16", "172.20.0.0/14"], "description": "Seattle office",
            "tunnelOptions": [{"pskSecretRef": {"name": "psk", "key": "t1"}, "ikeProposals": ["aes256gcm16-prfsha256-ecp256"], "dpdTimeoutSeconds": 30, "startupAction": "Start"}]}),
            ),
        ),
        ("DatabaseMigration", migration(json!({}))),
        (
            "DatabaseMigration",
            migration(
                json!({"scheduledAt": "2026-12-05T22:00:00+01:00", "strategy": "Readdress", "deleteSourceNetwork": false}),
            ),
        ),
        (
            "DatabaseMigration",
            migration(json!({"scheduledAt": "2026-12-05T21:00:00.5Z"})),
        ),
        (
            "NetworkAllocation",
            json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "NetworkAllocation", "metadata": {"name": "10-20-30-64-26"},
            "spec": {"cidr": "10.20.30.64/26", "network": {"namespace": "acme", "name": "prod", "uid": "1234"}}}),
        ),
    ];
    for (kind, obj) in cases {
        assert_admitted(kind, obj, None);
    }
}

#[test]
fn valid_updates_are_admitted() {
    let old = network(json!({"cidr": "10.20.30.64/26"}));
    assert_admitted(
        "PrivateNetwork",
        network(json!({"cidr": "10.20.30.64/26", "description": "new"})),
        Some(old),
    );

    // GitOps: pinning the automatically assigned range in git afterwards is allowed.
    let mut assigned = network(json!({}));
    assigned["status"] = json!({"cidr": "10.0.0.0/26"});
    assert_admitted(
        "PrivateNetwork",
        network(json!({"cidr": "10.0.0.0/26"})),
        Some(assigned),
    );

    // After a migration, spec.network may follow the database to where it lives now.
    let mut migrated = database(json!({}));
    migrated["status"] = json!({"network": "prod-2026"});
    assert_admitted("AppDatabase", database(json!({"network": "prod-2026"})), Some(migrated));

    let old = migration(json!({"scheduledAt": "2026-12-05T22:00:00+01:00"}));
    assert_admitted(
        "DatabaseMigration",
        migration(json!({"scheduledAt": "2026-12-06T22:00:00+01:00"})),
        Some(old),
    );
}

// ---- PrivateNetwork ------------------------------------------------------------------------------------------

#[test]
fn network_cidr_must_be_ipv4_cidr() {
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "10.20.30.64"})),
        None,
        "cidr must be an IPv4 range in CIDR notation",
    );
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "fd00::/122"})),
        None,
        "cidr must be an IPv4 range in CIDR notation",
    );
}

#[test]
fn network_cidr_must_be_a_26() {
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "10.20.30.0/24"})),
        None,
        "cidr must be a /26 (64 addresses)",
    );
}

#[test]
fn network_cidr_must_be_aligned() {
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "10.20.30.65/26"})),
        None,
        "cidr must start on a /26 boundary",
    );
}

#[test]
fn network_cidr_must_be_private() {
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "8.8.8.0/26"})),
        None,
        "cidr must lie inside a private range",
    );
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "172.32.0.0/26"})),
        None,
        "cidr must lie inside a private range",
    );
}

#[test]
fn network_cidr_is_immutable() {
    let old = network(json!({"cidr": "10.20.30.64/26"}));
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "10.20.30.128/26"})),
        Some(old.clone()),
        "spec.cidr is immutable once set",
    );
    assert_refused(
        "PrivateNetwork",
        network(json!({})),
        Some(old),
        "spec.cidr is immutable once set",
    );
}

#[test]
fn network_cidr_added_later_must_match_assignment() {
    let mut assigned = network(json!({}));
    assigned["status"] = json!({"cidr": "10.0.0.0/26"});
    assert_refused(
        "PrivateNetwork",
        network(json!({"cidr": "10.0.0.64/26"})),
        Some(assigned),
        "only with the range already assigned",
    );
}

#[test]
fn network_unknown_field_refused() {
    assert_refused(
        "PrivateNetwork",
        network(json!({"type": "Production"})),
        None,
        "spec.type: field not declared in schema",
    );
}

// ---- AppDatabase ---------------------------------------------------------------------------------------------

#[test]
fn database_username_shape() {
    let bad = |u: &str| database(json!({"admin": {"username": u, "passwordSecretRef": {"name": "s", "key": "k"}}}));
    assert_refused(
        "AppDatabase",
        bad("9lives"),
        None,
        "admin.username must start with a letter or underscore",
    );
    assert_refused(
        "AppDatabase",
        bad("app-admin"),
        None,
        "admin.username must start with a letter or underscore",
    );
    assert_refused("AppDatabase", bad("Root"), None, "admin.username must not be root");
    assert_refused(
        "AppDatabase",
        bad("a_very_long_administrator_name_over_32"),
        None,
        "Too long: may not be more than 32",
    );
}

#[test]
fn database_engine_is_an_enum() {
    assert_refused(
        "AppDatabase",
        database(json!({"engine": "Postgres"})),
        None,
        "Unsupported value: \"Postgres\"",
    );
}

#[test]
fn database_version_shape() {
    assert_refused(
        "AppDatabase",
        database(json!({"version": "latest"})),
        None,
        "spec.version in body should match",
    );
}

#[test]
fn database_storage_size_must_be_positive_quantity() {
    assert_refused(
        "AppDatabase",
        database(json!({"storage": {"size": "lots"}})),
        None,
        "storage.size must be a positive quantity",
    );
    assert_refused(
        "AppDatabase",
        database(json!({"storage": {"size": "0"}})),
        None,
        "storage.size must be a positive quantity",
    );
}

#[test]
fn database_required_fields() {
    assert_refused(
        "AppDatabase",
        database(json!({"admin": null})),
        None,
        "spec.admin: Required value",
    );
    assert_refused(
        "AppDatabase",
        database(json!({"storage": null})),
        None,
        "spec.storage: Required value",
    );
}

#[test]
fn database_network_moves_only_through_migration() {
    let old = database(json!({}));
    assert_refused(
        "AppDatabase",
        database(json!({"network": "other"})),
        Some(old),
        "spec.network cannot be changed to move a database",
    );
}

#[test]
fn database_storage_and_version_immutable() {
    let old = database(json!({"version": "8.4"}));
    assert_refused(
        "AppDatabase",
        database(json!({"version": "9.1"})),
        Some(old),
        "version is immutable",
    );
    let old = database(json!({}));
    assert_refused(
        "AppDatabase",
        database(json!({"storage": {"size": "40Gi"}})),
        Some(old),
        "storage is immutable",
    );
}

#[test]
fn database_dns_hostname_shape() {
    assert_refused(
        "AppDatabase",
        database(json!({"dns": {"hostname": "Not A Host"}})),
        None,
        "spec.dns.hostname in body should match",
    );
}

// ---- VpnConnection -------------------------------------------------------------------------------------------

#[test]
fn vpn_customer_cidrs_private() {
    assert_refused(
        "VpnConnection",
        vpn(json!({"customerCidrs": ["203.0.113.0/24"]})),
        None,
        "each customerCidrs entry must be an IPv4 CIDR inside",
    );
    assert_refused(
        "VpnConnection",
        vpn(json!({"customerCidrs": ["not-a-cidr"]})),
        None,
        "each customerCidrs entry must be an IPv4 CIDR inside",
    );
}

#[test]
fn vpn_customer_cidrs_not_empty_nor_repeated() {
    assert_refused(
        "VpnConnection",
        vpn(json!({"customerCidrs": []})),
        None,
        "should have at least 1 items",
    );
    assert_refused(
        "VpnConnection",
        vpn(json!({"customerCidrs": ["10.1.0.0/16", "10.1.0.0/16"]})),
        None,
        "must not list the same range twice",
    );
}

#[test]
fn vpn_gateway_address_public() {
    for addr in [
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "224.0.0.5",
        "0.0.0.0",
        "255.255.255.255",
    ] {
        assert_refused(
            "VpnConnection",
            vpn(json!({"customerGatewayAddress": addr})),
            None,
            "customerGatewayAddress must be a public unicast address",
        );
    }
    assert_refused(
        "VpnConnection",
        vpn(json!({"customerGatewayAddress": "gateway.example"})),
        None,
        "customerGatewayAddress must be an IPv4 address",
    );
}

#[test]
fn vpn_network_immutable() {
    let old = vpn(json!({}));
    assert_refused(
        "VpnConnection",
        vpn(json!({"network": "elsewhere"})),
        Some(old),
        "network is immutable",
    );
}

#[test]
fn vpn_tunnel_options_bounds() {
    assert_refused(
        "VpnConnection",
        vpn(json!({"tunnelOptions": [{}, {}, {}]})),
        None,
        "must have at most 2 items",
    );
    assert_refused(
        "VpnConnection",
        vpn(json!({"tunnelOptions": [{"dpdTimeoutSeconds": 10}]})),
        None,
        "should be greater than or equal to 30",
    );
    assert_refused(
        "VpnConnection",
        vpn(json!({"tunnelOptions": [{"startupAction": "Trap"}]})),
        None,
        "Unsupported value: \"Trap\"",
    );
    assert_refused(
        "VpnConnection",
        vpn(json!({"tunnelOptions": [{"ikeProposals": ["AES 256!"]}]})),
        None,
        "ikeProposals[0] in body should match",
    );
}

// ---- DatabaseMigration ---------------------------------------------------------------------------------------

#[test]
fn migration_schedule_is_rfc3339_or_local_time() {
    for bad in [
        "2026-12-05 22:00",
        "tomorrow",
        "2026-13-05T22:00:00Z",
        "2026-12-05T25:00:00+01:00",
        "2026-12-05T22:00:00[Europe/Amsterdam]",
    ] {
        assert_refused(
            "DatabaseMigration",
            migration(json!({"scheduledAt": bad, "timeZone": "Europe/Amsterdam"})),
            None,
            "scheduledAt must be an RFC 3339 date and time, for example 2026-12-05T22:00:00+01:00, or a local time",
        );
    }
}

#[test]
fn migration_local_time_needs_a_zone() {
    assert_refused(
        "DatabaseMigration",
        migration(json!({"scheduledAt": "2026-12-05T22:00:00"})),
        None,
        "scheduledAt without an offset needs timeZone",
    );
    assert_refused(
        "DatabaseMigration",
        migration(json!({"timeZone": "Europe/Amsterdam"})),
        None,
        "timeZone applies to scheduledAt, which is not set",
    );
    for bad in ["Europe Amsterdam", "/Europe", "Europe/", "../etc/passwd"] {
        assert_refused(
            "DatabaseMigration",
            migration(json!({"scheduledAt": "2026-12-05T22:00:00", "timeZone": bad})),
            None,
            "timeZone in body should match",
        );
    }
    for ok in [
        json!({"scheduledAt": "2026-12-05T22:00:00", "timeZone": "Europe/Amsterdam"}),
        json!({"scheduledAt": "2026-10-25T02:30:00+01:00", "timeZone": "Europe/Amsterdam"}),
        json!({"scheduledAt": "2026-12-05T22:00:00", "timeZone": "America/Argentina/Buenos_Aires"}),
        json!({"scheduledAt": "2026-12-05T22:00:00", "timeZone": "Etc/GMT+5"}),
    ] {
        assert_admitted("DatabaseMigration", migration(ok), None);
    }
}

#[test]
fn migration_strategy_is_an_enum() {
    assert_refused(
        "DatabaseMigration",
        migration(json!({"strategy": "Teleport"})),
        None,
        "Unsupported value: \"Teleport\"",
    );
}

#[test]
fn migration_references_immutable() {
    let old = migration(json!({}));
    assert_refused(
        "DatabaseMigration",
        migration(json!({"database": "other"})),
        Some(old.clone()),
        "database is immutable",
    );
    assert_refused(
        "DatabaseMigration",
        migration(json!({"targetNetwork": "other"})),
        Some(old),
        "targetNetwork is immutable",
    );
}

// ---- names ---------------------------------------------------------------------------------------------------

/// Each kind's name limit, from the names its children get: at the limit admitted, one more refused with the reason,
/// and the characters a child's kind refuses (dots everywhere, a leading digit where a Service is named after it).
#[test]
fn names_are_limited_per_kind_so_children_stay_valid() {
    use appdb_operator::names::{MAX_DATABASE_NAME, MAX_MIGRATION_NAME, MAX_NETWORK_NAME, MAX_VPN_NAME};
    let named = |mut obj: Value, name: &str| {
        obj["metadata"]["name"] = name.into();
        obj
    };
    let cases = [
        (
            "AppDatabase",
            database(json!({})),
            MAX_DATABASE_NAME,
            "at most 52 characters",
            true,
        ),
        (
            "VpnConnection",
            vpn(json!({})),
            MAX_VPN_NAME,
            "at most 47 characters",
            true,
        ),
        (
            "DatabaseMigration",
            migration(json!({})),
            MAX_MIGRATION_NAME,
            "at most 54 characters",
            false,
        ),
        (
            "PrivateNetwork",
            network(json!({})),
            MAX_NETWORK_NAME,
            "at most 63 characters",
            false,
        ),
    ];
    for (kind, obj, max, says, needs_letter_first) in cases {
        assert_admitted(kind, named(obj.clone(), &format!("a{}", "b".repeat(max - 1))), None);
        assert_refused(kind, named(obj.clone(), &format!("a{}", "b".repeat(max))), None, says);
        assert_refused(kind, named(obj.clone(), "orders.prod"), None, says);
        if needs_letter_first {
            assert_refused(kind, named(obj.clone(), "9orders"), None, "starting with a letter");
        } else {
            assert_admitted(kind, named(obj.clone(), "2026-q4"), None);
        }
    }
}

// ---- NetworkAllocation ---------------------------------------------------------------------------------------

#[test]
fn allocation_name_is_its_range() {
    let obj = json!({"apiVersion": "appdb.dev/v1alpha1", "kind": "NetworkAllocation", "metadata": {"name": "10-20-30-0-26"},
        "spec": {"cidr": "10.20.30.64/26", "network": {"namespace": "acme", "name": "prod", "uid": "1234"}}});
    assert_refused(
        "NetworkAllocation",
        obj,
        None,
        "a NetworkAllocation's name must be its cidr",
    );
}

// ---- examples ------------------------------------------------------------------------------------------------

#[test]
fn every_example_manifest_is_admitted() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read examples") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read example");
            let docs: Vec<Value> =
                serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                let api_version = doc["apiVersion"].as_str().unwrap_or_default();
                if api_version.starts_with("appdb.dev/") {
                    let kind = doc["kind"].as_str().expect("kind").to_owned();
                    let msgs = messages(&kind, &doc, None);
                    assert!(msgs.is_empty(), "{}: {kind} refused: {msgs:?}", path.display());
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked >= 5,
        "expected at least one example of each kind, checked {checked}"
    );
}
