//! The custom resource types of the `appdb.dev/v1alpha1` API.
//!
//! This module depends on nothing else in the crate: the controllers, the domain modules, the CLI and the
//! kubectl plugin all read these types, never the other way round.

// kube's `printcolumn(...)` repeats `type_ = ...` per column, which clippy mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod app_database;
pub mod common;
pub mod conditions;
pub mod database_migration;
pub mod network_allocation;
pub mod private_network;
pub mod vpn_connection;

pub use app_database::{AppDatabase, AppDatabaseSpec, AppDatabaseStatus};
pub use database_migration::{DatabaseMigration, DatabaseMigrationSpec, DatabaseMigrationStatus};
pub use network_allocation::{NetworkAllocation, NetworkAllocationSpec};
pub use private_network::{PrivateNetwork, PrivateNetworkSpec, PrivateNetworkStatus};
pub use vpn_connection::{VpnConnection, VpnConnectionSpec, VpnConnectionStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every kind this operator serves.
pub const GROUP: &str = "appdb.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `kubectl get appdb` lists every kind of this API.
pub const CATEGORY: &str = "appdb";

/// Every CustomResourceDefinition this operator owns, in the order they are written to `crds/`.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        PrivateNetwork::crd(),
        AppDatabase::crd(),
        VpnConnection::crd(),
        DatabaseMigration::crd(),
        NetworkAllocation::crd(),
    ]
}
