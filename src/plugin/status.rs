//! `kubectl appdb status` (one table per kind, what a platform engineer checks first) and
//! `kubectl appdb vpn-config` (the customer's device configuration).

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt, api::ListParams};

use super::PluginError;
use crate::{
    api::{AppDatabase, DatabaseMigration, PrivateNetwork, VpnConnection},
    vpn::render::DEVICE_FORMATS,
};

/// Left-aligned columns separated by two spaces, like kubectl's tables.
fn table(title: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = format!("{title}\n");
    out.push_str(&line(header.iter().map(|h| h.to_string()).collect()));
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn or_dash(v: Option<String>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
}

fn state(common: Option<&crate::api::common::CommonStatus>) -> String {
    or_dash(common.and_then(|c| c.state.clone()))
}

/// The overview of one namespace (pure: from the listed objects).
pub fn render(
    networks: &[PrivateNetwork],
    databases: &[AppDatabase],
    vpns: &[VpnConnection],
    migrations: &[DatabaseMigration],
) -> String {
    let networks: Vec<Vec<String>> = networks
        .iter()
        .map(|n| {
            let s = n.status.as_ref();
            vec![
                n.name_any(),
                or_dash(s.and_then(|s| s.cidr.clone())),
                or_dash(s.and_then(|s| s.network_type.map(|t| format!("{t:?}")))),
                state(s.map(|s| &s.common)),
            ]
        })
        .collect();
    let databases: Vec<Vec<String>> = databases
        .iter()
        .map(|d| {
            let s = d.status.as_ref();
            let endpoint = s.and_then(|s| s.endpoint.as_ref());
            vec![
                d.name_any(),
                state(s.map(|s| &s.common)),
                or_dash(s.and_then(|s| s.network.clone())),
                or_dash(endpoint.map(|e| format!("{}:{}", e.host, e.port))),
                or_dash(endpoint.and_then(|e| e.address.clone())),
            ]
        })
        .collect();
    let mut tunnels = Vec::new();
    for v in vpns {
        let s = v.status.as_ref();
        let listed = s.map(|s| s.tunnels.clone()).unwrap_or_default();
        if listed.is_empty() {
            tunnels.push(vec![
                v.name_any(),
                v.spec.network.clone(),
                "-".into(),
                "-".into(),
                state(s.map(|s| &s.common)),
                "-".into(),
            ]);
        }
        for (i, t) in listed.iter().enumerate() {
            let up = serde_json::to_value(t.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            tunnels.push(vec![
                v.name_any(),
                v.spec.network.clone(),
                (i + 1).to_string(),
                or_dash(t.outside_address.clone()),
                up,
                or_dash(t.message.clone()),
            ]);
        }
    }
    let migrations: Vec<Vec<String>> = migrations
        .iter()
        .map(|m| {
            let s = m.status.as_ref();
            vec![
                m.name_any(),
                m.spec.database.clone(),
                m.spec.target_network.clone(),
                format!("{:?}", m.spec.effective_strategy()),
                // The zone's clock when the customer named one, else the instant as written.
                or_dash(
                    s.and_then(|s| s.scheduled_for_local.clone())
                        .or_else(|| m.spec.scheduled_at.clone()),
                ),
                state(s.map(|s| &s.common)),
            ]
        })
        .collect();
    [
        table("NETWORKS", &["NAME", "RANGE", "TYPE", "STATE"], &networks),
        table(
            "DATABASES",
            &["NAME", "STATE", "NETWORK", "ENDPOINT", "VPN ADDRESS"],
            &databases,
        ),
        table(
            "VPN TUNNELS",
            &["CONNECTION", "NETWORK", "TUNNEL", "OUTSIDE ADDRESS", "STATE", "MESSAGE"],
            &tunnels,
        ),
        table(
            "MIGRATIONS",
            &["NAME", "DATABASE", "TARGET", "STRATEGY", "SCHEDULED", "STATE"],
            &migrations,
        ),
    ]
    .join("\n")
}

pub async fn overview(client: &Client, namespace: &str) -> Result<String, PluginError> {
    // A namespace that does not exist is an error, not four empty tables. People often may not read Namespace
    // objects: only a definite 404 counts, a 403 says nothing.
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
    {
        Ok(None) => return Err(PluginError::NotFound(format!("namespace {namespace} does not exist"))),
        Ok(Some(_)) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(PluginError::from_kube("reading the namespace", e)),
    }
    let lp = ListParams::default();
    let networks = Api::<PrivateNetwork>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| PluginError::from_kube("listing PrivateNetworks", e))?;
    let databases = Api::<AppDatabase>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| PluginError::from_kube("listing AppDatabases", e))?;
    let vpns = Api::<VpnConnection>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| PluginError::from_kube("listing VpnConnections", e))?;
    let migrations = Api::<DatabaseMigration>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .map_err(|e| PluginError::from_kube("listing DatabaseMigrations", e))?;
    Ok(render(
        &networks.items,
        &databases.items,
        &vpns.items,
        &migrations.items,
    ))
}

/// The device formats, one per line: file name and description.
pub fn device_list() -> String {
    DEVICE_FORMATS
        .iter()
        .map(|(key, description)| format!("{key:<26}{description}\n"))
        .collect()
}

pub async fn vpn_config(
    client: &Client,
    namespace: &str,
    vpn: &str,
    device: &str,
    list_devices: bool,
) -> Result<String, PluginError> {
    if list_devices {
        return Ok(device_list());
    }
    if !DEVICE_FORMATS.iter().any(|(key, _)| *key == device) {
        return Err(PluginError::Usage(format!(
            "unknown device {device:?}; one of: {}",
            DEVICE_FORMATS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
        )));
    }
    let connection = Api::<VpnConnection>::namespaced(client.clone(), namespace)
        .get_opt(vpn)
        .await
        .map_err(|e| PluginError::from_kube("reading the VpnConnection", e))?
        .ok_or_else(|| PluginError::NotFound(format!("there is no VpnConnection {vpn:?} in namespace {namespace}")))?;
    let secret_name = connection
        .status
        .as_ref()
        .and_then(|s| s.config_secret.clone())
        .ok_or_else(|| {
            PluginError::NotFound(format!(
                "VpnConnection {vpn} has no configuration yet (its tunnels need their outside addresses first)"
            ))
        })?;
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(&secret_name)
        .await
        .map_err(|e| PluginError::from_kube("reading the configuration Secret", e))?
        .ok_or_else(|| PluginError::NotFound(format!("the configuration Secret {secret_name} does not exist")))?;
    let bytes = secret
        .data
        .and_then(|d| d.get(device).cloned())
        .ok_or_else(|| PluginError::NotFound(format!("{secret_name} holds no {device}")))?;
    String::from_utf8(bytes.0).map_err(|_| PluginError::Kubernetes(format!("{device} is not text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_say_none() {
        let t = table("X", &["A", "LONGER"], &[vec!["wide value".into(), "b".into()]]);
        assert_eq!(t, "X\nA           LONGER\nwide value  b\n");
        assert_eq!(table("Y", &["A"], &[]), "Y\nA\n(none)\n");
    }

    #[test]
    fn the_overview_shows_every_kind() {
        let network: PrivateNetwork = serde_json::from_value(serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "PrivateNetwork",
            "metadata": {"name": "prod", "namespace": "acme"}, "spec": {},
            "status": {"cidr": "10.20.30.64/26", "type": "Production", "state": "Ready"}
        }))
        .unwrap();
        let vpn: VpnConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "appdb.dev/v1alpha1", "kind": "VpnConnection",
            "metadata": {"name": "seattle", "namespace": "acme"},
            "spec": {"network": "prod", "customerCidrs": ["192.168.10.0/24"], "customerGatewayAddress": "198.51.100.7"},
            "status": {"tunnels": [
                {"outsideAddress": "203.0.113.10", "state": "UP"},
                {"outsideAddress": "203.0.113.11", "state": "DOWN", "message": "authentication failed"}
            ]}
        }))
        .unwrap();
        let out = render(&[network], &[], &[vpn], &[]);
        assert!(out.contains("prod  10.20.30.64/26  Production  Ready"), "{out}");
        assert!(
            out.contains("seattle     prod     1       203.0.113.10     UP"),
            "{out}"
        );
        assert!(out.contains("DOWN   authentication failed"), "{out}");
        assert!(out.contains("DATABASES") && out.contains("MIGRATIONS\nNAME"), "{out}");
    }
}
