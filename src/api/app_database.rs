//! `AppDatabase`: a customer's MySQL (or MariaDB) application database on one of its private networks.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CommonStatus, SecretKeyRef};

/// Desired state of a customer's application database.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "appdb.dev",
    version = "v1alpha1",
    kind = "AppDatabase",
    namespaced,
    shortname = "adb",
    category = "appdb",
    status = "AppDatabaseStatus",
    doc = "A customer's application database (MySQL or MariaDB), reachable only from that customer's sessions and, \
           through its VPN connections, from the customer's premises.",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(name = "Network", type_ = "string", json_path = ".status.network"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint.host"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.endpoint.address"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(
        "size(self.metadata.name) <= 52 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
    ).message("an AppDatabase's name must be at most 52 characters of lowercase letters, digits and '-', starting with a letter: its StatefulSet, Services and pods are named after it"),
    validation = Rule::new(
        "self.spec.network == oldSelf.spec.network || (has(oldSelf.status) && has(oldSelf.status.network) && self.spec.network == oldSelf.status.network)"
    ).message("spec.network cannot be changed to move a database: create a DatabaseMigration; after it completes, spec.network may be set to the network the database now lives on (status.network)"),
)]
#[serde(rename_all = "camelCase")]
pub struct AppDatabaseSpec {
    /// Name of the PrivateNetwork (same namespace) the database is created on.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub network: String,

    /// Database server: `MySQL` (default) or `MariaDB`.
    #[serde(default)]
    pub engine: Engine,

    /// Server version, for example `8.4` for MySQL or `11.4` for MariaDB. Omitted: the operator's default for the
    /// engine. Changing it later needs a DatabaseMigration that copies the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+(\.[0-9]+)?$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("version is immutable: changing the server version needs a DatabaseMigration"))]
    pub version: Option<String>,

    /// Container image to run instead of the engine's official image for `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// The database administrator the customer logs in as.
    pub admin: AdminCredentials,

    /// Persistent storage of the database.
    #[x_kube(validation = Rule::new("self == oldSelf").message("storage is immutable: moving to other storage needs a DatabaseMigration"))]
    pub storage: Storage,

    /// CPU and memory for the database container. Omitted: the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// DNS publishing of the address the database has inside the network (for VPN clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSpec>,

    /// What happens to the data volume when the AppDatabase is deleted: `Retain` (default) keeps the
    /// PersistentVolumeClaim, `Delete` removes it with the database.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Who may open a tunnel (`kubectl appdb tunnel`) to this database from a laptop. The operator keeps a Role that
    /// allows port-forward to exactly this database's pods, bound to these users and groups, and removes access as
    /// soon as a subject leaves the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelAccess>,
}

/// Tunnel access to one database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelAccess {
    /// Users and groups, as the cluster's authentication names them (for example from OIDC claims).
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub allowed: Vec<TunnelSubject>,
}

/// A user or a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSubject {
    /// `User` or `Group`.
    pub kind: SubjectKind,
    /// The user's or group's name as the cluster's authentication reports it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of subjects tunnel access is given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SubjectKind {
    User,
    Group,
}

/// Fate of the data volume when the AppDatabase is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the PersistentVolumeClaim (and so the data); delete it by hand when it is no longer needed.
    #[default]
    Retain,
    /// Delete the PersistentVolumeClaim with the database.
    Delete,
}

/// The database server software.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Engine {
    /// Oracle MySQL (the default).
    #[default]
    MySQL,
    /// MariaDB.
    MariaDB,
}

/// The administrator account. The password never appears in the AppDatabase; it lives in a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminCredentials {
    /// Login name: a letter or underscore, then letters, digits or underscores; at most 32 characters.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(
        validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("admin.username must start with a letter or underscore and contain only letters, digits and underscores"),
        validation = Rule::new("self.lowerAscii() != 'root'").message("admin.username must not be root: the operator manages root itself"),
    )]
    pub username: String,
    /// The Secret key holding the password: longer than 8 characters, printable ASCII, and no space, `/`, `"` or `@`.
    /// Changing the Secret's value rotates the password in the running server.
    pub password_secret_ref: SecretKeyRef,
}

/// Persistent storage of the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of the data volume, as a Kubernetes quantity, for example `20Gi`.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage.size must be a positive quantity such as 20Gi"))]
    pub size: String,
    /// StorageClass of the volume. Omitted: the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// DNS publishing of the database's VPN-facing address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// A DNS name, for example `db.acme.example.com`, that should resolve to `status.endpoint.address`. Published as
    /// an ExternalDNS `DNSEndpoint` when that CRD is installed.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub hostname: String,
}

/// Where clients reach the database.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Stable in-cluster DNS name, used by the customer's sessions; it never changes, not even by a migration.
    pub host: String,
    /// IPv4 address inside the network's /26 that VPN clients connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// TCP port.
    pub port: i32,
}

/// Observed state of an application database, written only by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDatabaseStatus {
    /// Where clients reach the database; set once the database is "Ready To Use".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    /// The PrivateNetwork the database lives on now (changes only through a DatabaseMigration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The `resourceVersion` of the admin password Secret whose value the running server has. Never the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_password_revision: Option<String>,
    /// The server (StatefulSet) that holds the data, once a copying DatabaseMigration has moved it; omitted while
    /// the database runs on the server its spec describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStatus>,
    /// The previous server, kept after a copying migration for the rollback window and then deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_server: Option<RetiredServer>,
    /// Observed generation, state ("Pending", "Creating", "Ready To Use", "Migration In Progress", "Failed") and
    /// conditions.
    #[serde(flatten)]
    pub common: CommonStatus,
}

/// A database server created by a copying migration: what it runs and on which storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerStatus {
    /// Name of the StatefulSet.
    pub name: String,
    /// Container image the server runs.
    pub image: String,
    /// Size of its data volume.
    pub storage_size: String,
    /// StorageClass of its data volume (omitted: the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// A server a copying migration moved away from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetiredServer {
    /// Name of the StatefulSet (read-only since the switch; its volume keeps the data as it was).
    pub name: String,
    /// When the operator deletes it (RFC 3339).
    pub delete_after: String,
}

/// The human states of an AppDatabase, as the seeds name them.
pub mod state {
    pub const PENDING: &str = "Pending";
    pub const CREATING: &str = "Creating";
    pub const READY_TO_USE: &str = "Ready To Use";
    pub const MIGRATION_IN_PROGRESS: &str = "Migration In Progress";
    pub const FAILED: &str = "Failed";
}

impl AppDatabase {
    /// The network the database lives on: where a migration moved it (`status.network`), else where it was created.
    pub fn current_network(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.network.as_deref())
            .unwrap_or(&self.spec.network)
    }
}
