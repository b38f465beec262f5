//! A database's servers and the names of their objects: pure facts that the AppDatabase controller, the migration
//! controller and the migration Jobs share. Depends only on the API types and the engine's image facts.

use kube::ResourceExt;

use crate::{
    api::{
        AppDatabase,
        app_database::{ServerStatus, Storage},
    },
    mysql::engine::flavor,
};

/// Key of the root password inside the operator-generated root Secret.
pub const ROOT_PASSWORD_KEY: &str = "password";

/// Names of a database's objects (deterministic, derived from the AppDatabase's name).
pub struct Names {
    pub statefulset: String,
    pub headless: String,
    pub client: String,
    pub config: String,
    pub root_secret: String,
}

pub fn names(db: &AppDatabase) -> Names {
    let name = db.name_any();
    Names {
        statefulset: name.clone(),
        headless: format!("{name}-headless"),
        client: name.clone(),
        config: format!("{name}-config"),
        root_secret: format!("{name}-root"),
    }
}

/// One database server (a StatefulSet with its headless Service and configuration). A database has one; a
/// copying migration adds the new one beside it until the rollback window has passed.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerPlan {
    pub name: String,
    pub image: String,
    pub storage: Storage,
}

impl ServerPlan {
    /// The server the AppDatabase's spec describes, named like the AppDatabase.
    pub fn from_spec(db: &AppDatabase) -> ServerPlan {
        ServerPlan {
            name: db.name_any(),
            image: image(db),
            storage: db.spec.storage.clone(),
        }
    }

    /// The server a copying migration created (recorded in the AppDatabase's status).
    pub fn from_status(server: &ServerStatus) -> ServerPlan {
        ServerPlan {
            name: server.name.clone(),
            image: server.image.clone(),
            storage: Storage {
                size: server.storage_size.clone(),
                storage_class_name: server.storage_class_name.clone(),
            },
        }
    }

    pub fn to_status(&self) -> ServerStatus {
        ServerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            storage_size: self.storage.size.clone(),
            storage_class_name: self.storage.storage_class_name.clone(),
        }
    }

    pub fn headless(&self) -> String {
        format!("{}-headless", self.name)
    }

    pub fn config(&self) -> String {
        format!("{}-config", self.name)
    }

    /// The address of the server's pod: `NAME-0.NAME-headless.NS.svc.DOMAIN`.
    pub fn pod_host(&self, namespace: &str, cluster_domain: &str) -> String {
        format!("{}-0.{}.{namespace}.svc.{cluster_domain}", self.name, self.headless())
    }
}

/// The server a copying migration creates: `<database>-<first 6 hex digits of a digest of the migration's UID>`
/// (the database part shortened so pod names stay within 63 characters).
pub fn copy_server_name(database: &str, migration_uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(migration_uid.as_bytes());
    let suffix: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    let mut base = database.to_owned();
    base.truncate(40);
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// The new server a copying migration asks for: the current server with the migration's target fields.
pub fn copy_server_plan(
    db: &AppDatabase,
    current: &ServerPlan,
    name: &str,
    target: Option<&crate::api::database_migration::MigrationTarget>,
) -> ServerPlan {
    let image = match target {
        Some(t) if t.image.is_some() => t.image.clone().unwrap_or_default(),
        Some(t) if t.version.is_some() => format!(
            "{}:{}",
            flavor(db.spec.engine).image_repository,
            t.version.as_deref().unwrap_or_default()
        ),
        _ => current.image.clone(),
    };
    ServerPlan {
        name: name.to_owned(),
        image,
        storage: target
            .and_then(|t| t.storage.clone())
            .unwrap_or_else(|| current.storage.clone()),
    }
}

/// The container image for the database.
pub fn image(db: &AppDatabase) -> String {
    let f = flavor(db.spec.engine);
    db.spec.image.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            f.image_repository,
            db.spec.version.as_deref().unwrap_or(f.default_version)
        )
    })
}
