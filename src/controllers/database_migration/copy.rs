//! The copying strategies (Replicate, DumpRestore): the migration Job that runs `appdb-operator migrate`, and
//! the folding of the phases it reports (on its pod's `appdb.dev/migration-progress` annotation) into status.
//!
//! The AppDatabase controller runs the new server beside the old one while the copy is under way and switches the
//! database's Service to it once the engine reports `promote`; this controller only starts, watches and ends.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{Resource, ResourceExt};

use crate::{
    api::{
        AppDatabase, DatabaseMigration,
        database_migration::{CopyStatus, MigrationStrategy},
    },
    database::{ROOT_PASSWORD_KEY, ServerPlan, names},
    migration::report::{CopyPhase, PhaseReport},
    mysql::PORT as MYSQL_PORT,
    names::{LABEL_DATABASE, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY, ROLE_OPERATOR_JOB},
    workload::{hardened_container_security, secret_env},
};

/// Label on the migration Job's pods naming their DatabaseMigration.
pub const LABEL_MIGRATION: &str = "appdb.dev/migration";

fn short(name: String) -> String {
    let mut n = name;
    n.truncate(63);
    n.trim_end_matches('-').to_owned()
}

/// `<migration>-copy`, or `<migration>-rollback` for the Job that only makes the source writable again.
pub fn job_name(m: &DatabaseMigration, rollback: bool) -> String {
    short(format!(
        "{}-{}",
        m.name_any(),
        if rollback { "rollback" } else { "copy" }
    ))
}

pub fn service_account_name(m: &DatabaseMigration) -> String {
    short(format!("{}-copy", m.name_any()))
}

fn labels(m: &DatabaseMigration) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_DATABASE.to_owned(), m.spec.database.clone()),
        (LABEL_MIGRATION.to_owned(), m.name_any()),
    ])
}

fn meta(m: &DatabaseMigration, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: m.namespace(),
        labels: Some(labels(m)),
        owner_references: m.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// `<migration>-copy-report`: where the Job's pods report the engine's phases, each under its own pod name.
pub fn report_configmap_name(m: &DatabaseMigration) -> String {
    short(format!("{}-copy-report", m.name_any()))
}

/// The migration's report ConfigMap, without data (the Job writes the reports; see `crate::report`).
pub fn report_configmap(m: &DatabaseMigration) -> k8s_openapi::api::core::v1::ConfigMap {
    crate::report::configmap(meta(m, report_configmap_name(m)))
}

/// The Job's identity: it may read and patch the migration's report ConfigMap, nothing else.
pub fn rbac(
    m: &DatabaseMigration,
) -> (
    k8s_openapi::api::core::v1::ServiceAccount,
    k8s_openapi::api::rbac::v1::Role,
    k8s_openapi::api::rbac::v1::RoleBinding,
) {
    crate::controllers::rbac::reporter(meta(m, service_account_name(m)), &report_configmap_name(m))
}

/// Everything the Job needs.
pub struct JobInputs<'a> {
    pub migration: &'a DatabaseMigration,
    pub database: &'a AppDatabase,
    pub source: &'a ServerPlan,
    pub target: &'a ServerPlan,
    pub strategy: MigrationStrategy,
    pub cutover_at: Option<jiff::Timestamp>,
    pub operator_image: &'a str,
    pub cluster_domain: &'a str,
    pub rollback: bool,
}

fn plain_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// The Job running `appdb-operator migrate`. Every retry is a new pod (restartPolicy Never), so a killed engine
/// is run again from where the target's progress table says it was. Passwords come from the database's root
/// Secret (both servers share it), never from arguments.
pub fn job(i: &JobInputs<'_>) -> Job {
    let m = i.migration;
    let namespace = m.namespace().unwrap_or_default();
    let root_secret = names(i.database).root_secret;
    let service = format!(
        "{}.{namespace}.svc.{}:{MYSQL_PORT}",
        names(i.database).client,
        i.cluster_domain
    );
    let mut args = vec![
        "migrate".to_owned(),
        "--strategy".into(),
        match i.strategy {
            MigrationStrategy::DumpRestore => "dump-restore".into(),
            _ => "replicate".into(),
        },
        "--source".into(),
        format!("{}:{MYSQL_PORT}", i.source.pod_host(&namespace, i.cluster_domain)),
        "--target".into(),
        format!("{}:{MYSQL_PORT}", i.target.pod_host(&namespace, i.cluster_domain)),
        "--service".into(),
        service,
    ];
    if let Some(at) = i.cutover_at {
        args.extend(["--cutover-at".into(), at.to_string()]);
    }
    if i.rollback {
        args.push("--rollback".into());
    }
    let mut pod_labels = labels(m);
    pod_labels.insert(LABEL_ROLE.to_owned(), ROLE_OPERATOR_JOB.to_owned());
    Job {
        metadata: meta(m, job_name(m, i.rollback)),
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(service_account_name(m)),
                    automount_service_account_token: Some(true),
                    containers: vec![Container {
                        name: "migrate".into(),
                        image: Some(i.operator_image.into()),
                        args: Some(args),
                        env: Some(vec![
                            secret_env("APPDB_SOURCE_PASSWORD", &root_secret, ROOT_PASSWORD_KEY),
                            secret_env("APPDB_TARGET_PASSWORD", &root_secret, ROOT_PASSWORD_KEY),
                            field_env("POD_NAME", "metadata.name"),
                            field_env("POD_NAMESPACE", "metadata.namespace"),
                            plain_env(
                                "APPDB_REPORT_TO",
                                format!("$(POD_NAMESPACE)/{}/$(POD_NAME)", report_configmap_name(m)),
                            ),
                        ]),
                        security_context: Some(hardened_container_security(65532)),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Job has failed for good (its `Failed` condition holds: the backoff limit is spent).
pub fn failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}

/// The reports of the most recent run: the newest pod that has reported anything (its key in the migration's
/// report ConfigMap).
pub fn reports_from(pods: &[Pod], reports: Option<&k8s_openapi::api::core::v1::ConfigMap>) -> Vec<PhaseReport> {
    let mut reporting: Vec<(&Pod, Vec<PhaseReport>)> = pods
        .iter()
        .filter_map(|p| {
            let raw = crate::report::report_of(reports, &p.name_any())?;
            Some((p, serde_json::from_str::<Vec<PhaseReport>>(raw).ok()?))
        })
        .collect();
    reporting.sort_by_key(|(p, _)| p.creation_timestamp().map(|t| t.0));
    reporting.pop().map(|(_, r)| r).unwrap_or_default()
}

/// What the reports mean for the migration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folded {
    pub copy: CopyStatus,
    /// The source has stopped taking writes: the migration is "Migration In Progress".
    pub fenced: bool,
    /// The engine finished; the measured write outage.
    pub done: Option<f64>,
    /// The engine rolled back, and why.
    pub rolled_back: Option<String>,
    /// When each phase ended, by phase name.
    pub phase_times: BTreeMap<String, String>,
}

pub fn fold(server: &str, reports: &[PhaseReport]) -> Folded {
    let mut f = Folded {
        copy: CopyStatus {
            server: server.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    for r in reports {
        f.copy.phase = Some(r.phase);
        f.phase_times.insert(format!("copy:{}", r.phase), r.end.clone());
        if r.phase == CopyPhase::Snapshot {
            f.copy.rows = r.rows;
            f.copy.bytes = r.bytes;
        }
        if r.lag_seconds.is_some() {
            f.copy.lag_seconds = r.lag_seconds;
        }
        match r.phase {
            CopyPhase::Fence => f.fenced = true,
            CopyPhase::Done => f.done = Some(r.downtime_seconds.unwrap_or(0.0)),
            CopyPhase::RolledBack => {
                f.fenced = false;
                f.rolled_back = Some(r.message.clone().unwrap_or_else(|| "rolled back".into()));
            }
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        app_database::{AppDatabaseSpec, Storage},
        database_migration::DatabaseMigrationSpec,
    };

    fn migration() -> DatabaseMigration {
        let mut m = DatabaseMigration::new(
            "orders-to-ssd",
            DatabaseMigrationSpec {
                database: "orders".into(),
                target_network: "prod".into(),
                scheduled_at: None,
                time_zone: None,
                strategy: Some(MigrationStrategy::Replicate),
                target: None,
                delete_source_network: true,
            },
        );
        m.metadata.namespace = Some("acme".into());
        m.metadata.uid = Some("m-uid".into());
        m
    }

    fn database() -> AppDatabase {
        let spec: AppDatabaseSpec = serde_json::from_value(serde_json::json!({
            "network": "prod", "engine": "MariaDB",
            "admin": {"username": "acme_admin", "passwordSecretRef": {"name": "orders-admin", "key": "password"}},
            "storage": {"size": "10Gi"}
        }))
        .expect("spec");
        let mut db = AppDatabase::new("orders", spec);
        db.metadata.namespace = Some("acme".into());
        db
    }

    fn plan(name: &str) -> ServerPlan {
        ServerPlan {
            name: name.into(),
            image: "mariadb:11.4".into(),
            storage: Storage {
                size: "10Gi".into(),
                storage_class_name: None,
            },
        }
    }

    #[test]
    fn the_job_addresses_both_pods_and_the_service_and_takes_passwords_from_the_secret() {
        let (m, db) = (migration(), database());
        let at: jiff::Timestamp = "2026-12-05T21:00:00Z".parse().unwrap();
        let job = job(&JobInputs {
            migration: &m,
            database: &db,
            source: &plan("orders"),
            target: &plan("orders-4f1a2b"),
            strategy: MigrationStrategy::Replicate,
            cutover_at: Some(at),
            operator_image: "op:1",
            cluster_domain: "cluster.local",
            rollback: false,
        });
        assert_eq!(job.metadata.name.as_deref(), Some("orders-to-ssd-copy"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        assert_eq!(
            c.args.clone().unwrap(),
            [
                "migrate",
                "--strategy",
                "replicate",
                "--source",
                "orders-0.orders-headless.acme.svc.cluster.local:3306",
                "--target",
                "orders-4f1a2b-0.orders-4f1a2b-headless.acme.svc.cluster.local:3306",
                "--service",
                "orders.acme.svc.cluster.local:3306",
                "--cutover-at",
                "2026-12-05T21:00:00Z"
            ]
        );
        let env = c.env.clone().unwrap();
        for name in ["APPDB_SOURCE_PASSWORD", "APPDB_TARGET_PASSWORD"] {
            let e = env.iter().find(|e| e.name == name).expect(name);
            assert!(e.value.is_none());
            assert_eq!(
                e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name,
                "orders-root"
            );
        }
    }

    #[test]
    fn reports_fold_into_status() {
        let r = |phase: &str| PhaseReport {
            end: format!("t-{phase}"),
            ..PhaseReport::ended(
                serde_json::from_value(serde_json::json!(phase)).unwrap(),
                jiff::Timestamp::now(),
            )
        };
        let mut snapshot = r("snapshot");
        snapshot.rows = Some(10);
        snapshot.bytes = Some(2000);
        let f = fold("orders-1", &[r("prepare"), snapshot.clone()]);
        assert_eq!(f.copy.phase, Some(CopyPhase::Snapshot));
        assert_eq!((f.copy.rows, f.copy.bytes), (Some(10), Some(2000)));
        assert!(!f.fenced && f.done.is_none() && !f.copy.promoted());
        let mut done = r("done");
        done.downtime_seconds = Some(1.5);
        let f = fold("orders-1", &[r("prepare"), snapshot, r("fence"), r("promote"), done]);
        assert!(f.fenced && f.copy.promoted());
        assert_eq!(f.done, Some(1.5));
        assert_eq!(f.phase_times.get("copy:fence").map(String::as_str), Some("t-fence"));
        let mut back = r("rolled-back");
        back.message = Some("checksums differ".into());
        let f = fold("orders-1", &[r("fence"), back]);
        assert!(!f.fenced);
        assert_eq!(f.rolled_back.as_deref(), Some("checksums differ"));
    }

    #[test]
    fn the_newest_reporting_pod_wins() {
        let pod = |name: &str, at: &str| {
            let mut p = Pod::default();
            p.metadata.name = Some(name.into());
            p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                at.parse().unwrap(),
            ));
            p
        };
        let old = pod("a", "2026-01-01T00:00:00Z");
        let new = pod("b", "2026-01-01T00:01:00Z");
        let silent = pod("c", "2026-01-01T00:02:00Z");
        let reports = k8s_openapi::api::core::v1::ConfigMap {
            data: Some(BTreeMap::from([
                (
                    "a".to_owned(),
                    r#"[{"phase":"prepare","start":"s","end":"e"}]"#.to_owned(),
                ),
                (
                    "b".to_owned(),
                    r#"[{"phase":"prepare","start":"s","end":"e"},{"phase":"snapshot","start":"s","end":"e"}]"#
                        .to_owned(),
                ),
            ])),
            ..Default::default()
        };
        let all = [new.clone(), old.clone(), silent.clone()];
        assert_eq!(reports_from(&all, Some(&reports)).len(), 2);
        assert_eq!(reports_from(&[old.clone(), new, silent], Some(&reports)).len(), 2);
        assert_eq!(reports_from(std::slice::from_ref(&old), Some(&reports)).len(), 1);
        assert!(reports_from(&[old], None).is_empty());
        assert!(reports_from(&[], Some(&reports)).is_empty());
    }
}
