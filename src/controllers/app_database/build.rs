//! Build (pure): every object an AppDatabase needs, from the validated inputs. No client, no I/O.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        batch::v1::{Job, JobSpec},
        core::v1::{
            ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, ExecAction,
            KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
            Probe, ResourceRequirements, SeccompProfile, Secret, Service, ServicePort, ServiceSpec, Volume,
            VolumeMount, VolumeResourceRequirements,
        },
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt, api::DynamicObject, core::ApiResource};

use crate::{
    api::{AppDatabase, app_database::DeletionPolicy},
    database::{ROOT_PASSWORD_KEY, ServerPlan, names},
    mysql::PORT as MYSQL_PORT,
    mysql::engine::{admin_init_script, flavor, liveness_command, readiness_command, server_config, server_id},
    names::{
        ANNOTATION_SECRET_REVISION, LABEL_DATABASE, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY,
        ROLE_DATABASE, ROLE_OPERATOR_JOB,
    },
    netpol::database_policy,
    workload::{hardened_container_security, secret_env},
};

const CONFIG_FILE: &str = "appdb.cnf";
const INIT_SCRIPT: &str = "10-appdb-admin.sh";

/// What the builder needs beyond the AppDatabase itself.
pub struct BuildInputs<'a> {
    pub db: &'a AppDatabase,
    /// The PrivateNetwork the database lives on.
    pub network: &'a str,
    /// Every server to run; the client Service leads to `serving`.
    pub servers: &'a [ServerPlan],
    pub serving: &'a str,
}

/// One server's objects.
pub struct ServerObjects {
    pub config: ConfigMap,
    pub statefulset: StatefulSet,
    pub headless: Service,
}

/// The objects to apply.
pub struct Desired {
    pub servers: Vec<ServerObjects>,
    pub client: Service,
    pub policy: NetworkPolicy,
}

fn owner(db: &AppDatabase) -> OwnerReference {
    db.controller_owner_ref(&())
        .expect("an AppDatabase read from the API server has a name and a UID")
}

fn labels(db: &AppDatabase) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_DATABASE.to_owned(), db.name_any()),
    ])
}

fn pod_labels(db: &AppDatabase, instance: &str) -> BTreeMap<String, String> {
    let mut l = labels(db);
    l.insert(LABEL_ROLE.to_owned(), ROLE_DATABASE.to_owned());
    l.insert(LABEL_INSTANCE.to_owned(), instance.to_owned());
    l.insert("app.kubernetes.io/name".to_owned(), "appdb-database".to_owned());
    l
}

fn meta(db: &AppDatabase, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: db.namespace(),
        labels: Some(labels(db)),
        owner_references: Some(vec![owner(db)]),
        ..Default::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("250m".into())),
            ("memory".to_owned(), Quantity("512Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("1Gi".into()))])),
        ..Default::default()
    }
}

fn exec_probe(command: Vec<String>, period: i32, failures: i32, initial_delay: i32) -> Probe {
    Probe {
        exec: Some(ExecAction { command: Some(command) }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        initial_delay_seconds: Some(initial_delay),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The servers, client Service and NetworkPolicy of one database.
pub fn build(inputs: &BuildInputs) -> Desired {
    let db = inputs.db;
    let n = names(db);
    let namespace = db.namespace().unwrap_or_default();
    let service_port = ServicePort {
        name: Some("mysql".into()),
        port: MYSQL_PORT.into(),
        target_port: Some(IntOrString::String("mysql".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    // The stable client Service: its name and ClusterIP never change for the life of the AppDatabase; a migration
    // that moves the data only changes which instance it selects.
    let client = Service {
        metadata: meta(db, &n.client),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(pod_labels(db, inputs.serving)),
            ports: Some(vec![service_port]),
            ..Default::default()
        }),
        status: None,
    };
    let policy = database_policy(&namespace, &db.name_any(), inputs.network, owner(db));
    Desired {
        servers: inputs.servers.iter().map(|s| server_objects(db, s)).collect(),
        client,
        policy,
    }
}

/// A server's ConfigMap, StatefulSet and headless Service.
fn server_objects(db: &AppDatabase, server: &ServerPlan) -> ServerObjects {
    let f = flavor(db.spec.engine);
    let uid = db.uid().unwrap_or_default();
    // The first server keeps the id it always had; later ones get their own (replication needs distinct ids).
    let id = if server.name == db.name_any() {
        server_id(&uid)
    } else {
        server_id(&format!("{uid}/{}", server.name))
    };
    let config_name = server.config();
    let headless_name = server.headless();

    let config = ConfigMap {
        metadata: meta(db, &config_name),
        data: Some(BTreeMap::from([
            (CONFIG_FILE.to_owned(), server_config(db.spec.engine, id)),
            (INIT_SCRIPT.to_owned(), admin_init_script(db.spec.engine)),
        ])),
        ..Default::default()
    };

    let selector = pod_labels(db, &server.name);
    let statefulset = StatefulSet {
        metadata: meta(db, &server.name),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(match db.spec.deletion_policy {
                    DeletionPolicy::Retain => "Retain".into(),
                    DeletionPolicy::Delete => "Delete".into(),
                }),
                when_scaled: Some("Retain".into()),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![database_container(db, server)],
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(f.uid),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    volumes: Some(server_volumes(&config_name)),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![data_claim(db, server)]),
            ..Default::default()
        },
        status: None,
    };

    ServerObjects {
        config,
        statefulset,
        headless: headless_service(db, server, selector),
    }
}

/// The engine's container: passwords only from Secrets, real probes, hardened, writable only where the engine writes.
fn database_container(db: &AppDatabase, server: &ServerPlan) -> Container {
    let n = names(db);
    let f = flavor(db.spec.engine);
    let admin = &db.spec.admin;
    let env = vec![
        secret_env(f.root_password_env, &n.root_secret, ROOT_PASSWORD_KEY),
        secret_env("APPDB_ROOT_PASSWORD", &n.root_secret, ROOT_PASSWORD_KEY),
        EnvVar {
            name: "APPDB_ADMIN_USERNAME".into(),
            value: Some(admin.username.clone()),
            value_from: None,
        },
        secret_env(
            "APPDB_ADMIN_PASSWORD",
            &admin.password_secret_ref.name,
            &admin.password_secret_ref.key,
        ),
    ];
    Container {
        name: "database".into(),
        image: Some(server.image.clone()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("mysql".into()),
            container_port: MYSQL_PORT.into(),
            ..Default::default()
        }]),
        readiness_probe: Some(exec_probe(readiness_command(db.spec.engine), 10, 3, 5)),
        liveness_probe: Some(exec_probe(liveness_command(db.spec.engine), 20, 6, 30)),
        // First start (initialisation) can take minutes on slow storage.
        startup_probe: Some(exec_probe(liveness_command(db.spec.engine), 10, 60, 10)),
        resources: Some(db.spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(hardened_container_security(f.uid)),
        volume_mounts: Some(vec![
            mount("data", "/var/lib/mysql"),
            VolumeMount {
                name: "config".into(),
                mount_path: format!("/etc/mysql/conf.d/{CONFIG_FILE}"),
                sub_path: Some(CONFIG_FILE.into()),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "init".into(),
                mount_path: "/docker-entrypoint-initdb.d".into(),
                read_only: Some(true),
                ..Default::default()
            },
            mount("run", "/var/run/mysqld"),
            mount("tmp", "/tmp"),
        ]),
        ..Default::default()
    }
}

/// The server's configuration and init script (from its ConfigMap) and the scratch folders the engine writes.
fn server_volumes(config_name: &str) -> Vec<Volume> {
    vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_name.to_owned(),
                items: Some(vec![KeyToPath {
                    key: CONFIG_FILE.into(),
                    path: CONFIG_FILE.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "init".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_name.to_owned(),
                items: Some(vec![KeyToPath {
                    key: INIT_SCRIPT.into(),
                    path: INIT_SCRIPT.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
        empty_dir("run"),
        empty_dir("tmp"),
    ]
}

/// The data volume's claim, with the server's storage size and class.
fn data_claim(db: &AppDatabase, server: &ServerPlan) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(labels(db)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: server.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(server.storage.size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service that gives the server's pod its stable DNS name.
fn headless_service(db: &AppDatabase, server: &ServerPlan, selector: BTreeMap<String, String>) -> Service {
    Service {
        metadata: meta(db, &server.headless()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("mysql".into()),
                port: MYSQL_PORT.into(),
                target_port: Some(IntOrString::String("mysql".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The operator-generated root Secret (created once; its value is never regenerated).
pub fn root_secret(db: &AppDatabase, password: String) -> Secret {
    Secret {
        metadata: meta(db, &names(db).root_secret),
        string_data: Some(BTreeMap::from([(ROOT_PASSWORD_KEY.to_owned(), password)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Name of the Role and RoleBinding that give `spec.tunnel.allowed` its tunnel.
pub fn tunnel_access_name(db: &AppDatabase) -> String {
    format!("{}-tunnel", db.name_any())
}

/// What a tunnel to this database needs (the plugin checks the same, by name), and nothing beyond it:
/// port-forward only to the pods of the database's servers (`<server>-0`: StatefulSet pod names are
/// deterministic), reads only of this database, its Service and those pods. Listing pods cannot be limited by name;
/// the plugin lists the Service's pods to find the one serving now. Reading the pods by name is what plain
/// `kubectl port-forward svc/<database>` needs besides (it checks that the pod runs), so that a listed user without
/// the plugin gets the same tunnel.
pub fn tunnel_role(db: &AppDatabase, servers: &[ServerPlan]) -> k8s_openapi::api::rbac::v1::Role {
    use k8s_openapi::api::rbac::v1::PolicyRule;
    let rule = |group: &str, resource: &str, verb: &str, names: Option<Vec<String>>| PolicyRule {
        api_groups: Some(vec![group.into()]),
        resources: Some(vec![resource.into()]),
        verbs: vec![verb.into()],
        resource_names: names,
        ..Default::default()
    };
    let mut pods: Vec<String> = servers.iter().map(|s| format!("{}-0", s.name)).collect();
    pods.sort();
    pods.dedup();
    k8s_openapi::api::rbac::v1::Role {
        metadata: meta(db, &tunnel_access_name(db)),
        rules: Some(vec![
            rule("appdb.dev", "appdatabases", "get", Some(vec![db.name_any()])),
            rule("", "services", "get", Some(vec![names(db).client])),
            rule("", "pods", "list", None),
            rule("", "pods", "get", Some(pods.clone())),
            rule("", "pods/portforward", "create", Some(pods)),
        ]),
    }
}

/// The binding of [`tunnel_role`] to the users and groups `spec.tunnel.allowed` lists (none: access revoked).
pub fn tunnel_binding(db: &AppDatabase) -> k8s_openapi::api::rbac::v1::RoleBinding {
    use crate::api::app_database::SubjectKind;
    use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
    let subjects: Vec<Subject> = db
        .spec
        .tunnel
        .iter()
        .flat_map(|t| &t.allowed)
        .map(|s| Subject {
            kind: match s.kind {
                SubjectKind::User => "User",
                SubjectKind::Group => "Group",
            }
            .into(),
            name: s.name.clone(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        })
        .collect();
    RoleBinding {
        metadata: meta(db, &tunnel_access_name(db)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: tunnel_access_name(db),
        },
        subjects: Some(subjects),
    }
}

/// Name of the Job that rotates the admin password to the Secret's `revision`.
/// Each revision gets its own name, whatever the lengths: cutting `<name>-rotate-<revision>` at 63 characters would
/// give two revisions of a long-named database one Job, and the second rotation would be taken as done.
pub fn rotation_job_name(db: &AppDatabase, revision: &str) -> String {
    let name = format!("{}-rotate-{revision}", db.name_any());
    if name.len() <= 63 {
        return name;
    }
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(revision.as_bytes())
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut base = db.name_any();
    base.truncate(63 - "-rotate-".len() - digest.len());
    format!("{}-rotate-{digest}", base.trim_end_matches('-'))
}

/// The Job that sets the admin password in the running server (`appdb-operator rotate-password`). Credentials reach
/// it only as Secret references in its environment.
pub fn rotation_job(db: &AppDatabase, revision: &str, operator_image: &str, cluster_domain: &str) -> Job {
    let n = names(db);
    let namespace = db.namespace().unwrap_or_default();
    let mut metadata = meta(db, &rotation_job_name(db, revision));
    metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_SECRET_REVISION.to_owned(),
        revision.to_owned(),
    )]));
    let mut pod_labels = labels(db);
    pod_labels.insert(LABEL_ROLE.to_owned(), ROLE_OPERATOR_JOB.to_owned());
    let admin = &db.spec.admin;
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            active_deadline_seconds: Some(600),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("OnFailure".into()),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![Container {
                        name: "rotate-password".into(),
                        image: Some(operator_image.into()),
                        args: Some(vec!["rotate-password".into()]),
                        env: Some(vec![
                            EnvVar {
                                name: "APPDB_HOST".into(),
                                value: Some(format!("{}.{namespace}.svc.{cluster_domain}", n.client)),
                                value_from: None,
                            },
                            EnvVar {
                                name: "APPDB_PORT".into(),
                                value: Some(MYSQL_PORT.to_string()),
                                value_from: None,
                            },
                            EnvVar {
                                name: "APPDB_ADMIN_USERNAME".into(),
                                value: Some(admin.username.clone()),
                                value_from: None,
                            },
                            secret_env("APPDB_ROOT_PASSWORD", &n.root_secret, ROOT_PASSWORD_KEY),
                            secret_env(
                                "APPDB_ADMIN_PASSWORD",
                                &admin.password_secret_ref.name,
                                &admin.password_secret_ref.key,
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

/// ExternalDNS's DNSEndpoint kind.
pub fn dns_endpoint_resource() -> ApiResource {
    ApiResource {
        group: "externaldns.k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "externaldns.k8s.io/v1alpha1".into(),
        kind: "DNSEndpoint".into(),
        plural: "dnsendpoints".into(),
    }
}

/// A DNSEndpoint pointing `hostname` at the database's VPN-facing address.
pub fn dns_endpoint(db: &AppDatabase, hostname: &str, address: Ipv4Addr) -> DynamicObject {
    let mut obj =
        DynamicObject::new(&db.name_any(), &dns_endpoint_resource()).within(&db.namespace().unwrap_or_default());
    obj.metadata.labels = Some(labels(db));
    obj.metadata.owner_references = Some(vec![owner(db)]);
    obj.data = serde_json::json!({
        "spec": {"endpoints": [{"dnsName": hostname, "recordType": "A", "recordTTL": 300, "targets": [address.to_string()]}]}
    });
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AppDatabaseSpec,
        app_database::{AdminCredentials, Engine, Storage},
        common::SecretKeyRef,
    };
    use crate::database::{copy_server_name, copy_server_plan};

    fn db(engine: Engine, policy: DeletionPolicy) -> AppDatabase {
        let mut db = AppDatabase::new(
            "orders",
            AppDatabaseSpec {
                network: "prod".into(),
                engine,
                version: None,
                image: None,
                admin: AdminCredentials {
                    username: "acme_admin".into(),
                    password_secret_ref: SecretKeyRef {
                        name: "orders-admin".into(),
                        key: "pw".into(),
                    },
                },
                storage: Storage {
                    size: "20Gi".into(),
                    storage_class_name: Some("fast".into()),
                },
                resources: None,
                dns: None,
                deletion_policy: policy,
                tunnel: None,
            },
        );
        db.metadata.namespace = Some("acme".into());
        db.metadata.uid = Some("uid-1".into());
        db
    }

    /// The objects of a database with its one server.
    fn build_one(db: &AppDatabase) -> Desired {
        let servers = [ServerPlan::from_spec(db)];
        build(&BuildInputs {
            db,
            network: "prod",
            servers: &servers,
            serving: &servers[0].name,
        })
    }

    fn is_dns1035_label(s: &str) -> bool {
        s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    #[test]
    fn the_longest_admitted_name_gives_valid_child_names() {
        // The CRD admits up to MAX_DATABASE_NAME characters starting with a letter; every derived name must then be
        // valid for its kind on a real API server.
        let mut long = db(Engine::MySQL, DeletionPolicy::Retain);
        let name = format!("d{}", "9".repeat(crate::names::MAX_DATABASE_NAME - 1));
        long.metadata.name = Some(name.clone());
        let copy = copy_server_name(&name, "migration-uid");
        let servers = [
            ServerPlan::from_spec(&long),
            ServerPlan {
                name: copy.clone(),
                ..ServerPlan::from_spec(&long)
            },
        ];
        let desired = build(&BuildInputs {
            db: &long,
            network: "prod",
            servers: &servers,
            serving: &servers[0].name,
        });
        for server in &desired.servers {
            let sts = server.statefulset.metadata.name.clone().unwrap();
            // The StatefulSet controller labels each revision `<name>-<10 characters>` (at most 63).
            assert!(sts.len() <= 52 && is_dns1035_label(&sts), "{sts}");
            assert!(format!("{sts}-0").len() <= 63, "pod name and its pod-name label");
            let headless = server.headless.metadata.name.clone().unwrap();
            assert!(is_dns1035_label(&headless), "{headless}");
            assert!(server.config.metadata.name.clone().unwrap().len() <= 253);
        }
        let client = desired.client.metadata.name.clone().unwrap();
        assert!(is_dns1035_label(&client), "{client}");
        assert!(names(&long).root_secret.len() <= 253);
        let (a, b) = (
            rotation_job_name(&long, "123456789"),
            rotation_job_name(&long, "123456790"),
        );
        assert!(a.len() <= 63 && b.len() <= 63 && a != b, "{a} {b}");
        assert_eq!(
            rotation_job_name(&db(Engine::MySQL, DeletionPolicy::Retain), "42"),
            "orders-rotate-42"
        );
    }

    #[test]
    fn a_copy_gets_its_own_server_and_the_service_follows_the_serving_one() {
        let db = db(Engine::MariaDB, DeletionPolicy::Retain);
        let current = ServerPlan::from_spec(&db);
        let name = copy_server_name("orders", "migration-uid");
        assert!(
            name.starts_with("orders-") && name.len() == "orders-".len() + 6,
            "{name}"
        );
        assert_eq!(copy_server_name("orders", "migration-uid"), name);
        let target = crate::api::database_migration::MigrationTarget {
            version: Some("11.8".into()),
            image: None,
            storage: Some(Storage {
                size: "50Gi".into(),
                storage_class_name: Some("fast".into()),
            }),
        };
        let new = copy_server_plan(&db, &current, &name, Some(&target));
        assert_eq!(new.image, "mariadb:11.8");
        assert_eq!(new.storage.size, "50Gi");
        assert_eq!(copy_server_plan(&db, &current, &name, None).image, current.image);
        let servers = [current.clone(), new.clone()];
        let d = build(&BuildInputs {
            db: &db,
            network: "prod",
            servers: &servers,
            serving: &new.name,
        });
        assert_eq!(d.servers.len(), 2);
        let (old_objects, new_objects) = (&d.servers[0], &d.servers[1]);
        assert_eq!(old_objects.statefulset.metadata.name.as_deref(), Some("orders"));
        assert_eq!(new_objects.statefulset.metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(
            new_objects.statefulset.spec.service_name.as_deref(),
            Some(format!("{name}-headless").as_str())
        );
        // Distinct server ids: replication between them needs that.
        let cnf = |o: &ServerObjects| o.config.data.as_ref().unwrap()["appdb.cnf"].clone();
        assert_ne!(cnf(old_objects), cnf(new_objects));
        let selector = d.client.spec.as_ref().unwrap().selector.clone().unwrap();
        assert_eq!(selector.get(LABEL_INSTANCE).map(String::as_str), Some(name.as_str()));
        let claim = &new_objects.statefulset.spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(claim.spec.as_ref().unwrap().storage_class_name.as_deref(), Some("fast"));
    }

    fn container(d: &Desired) -> &Container {
        &d.servers[0].statefulset.spec.template.spec.as_ref().unwrap().containers[0]
    }

    #[test]
    fn statefulset_runs_the_engine_with_real_probes_and_no_password_literal() {
        let d = build_one(&db(Engine::MySQL, DeletionPolicy::Retain));
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("mysql:8.4"));
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .exec
            .as_ref()
            .unwrap()
            .command
            .clone()
            .unwrap()
            .join(" ");
        assert!(probe.contains("SELECT 1"), "{probe}");
        let env = c.env.as_ref().unwrap();
        let admin = env.iter().find(|e| e.name == "APPDB_ADMIN_PASSWORD").unwrap();
        assert!(admin.value.is_none());
        let key_ref = admin.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((key_ref.name.as_str(), key_ref.key.as_str()), ("orders-admin", "pw"));
        assert!(env.iter().any(|e| e.name == "MYSQL_ROOT_PASSWORD" && e.value.is_none()));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (
                sc.allow_privilege_escalation,
                sc.read_only_root_filesystem,
                sc.run_as_non_root
            ),
            (Some(false), Some(true), Some(true))
        );
        let spec = &d.servers[0].statefulset.spec;
        assert_eq!(spec.service_name.as_deref(), Some("orders-headless"));
        let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(pvc.spec.as_ref().unwrap().storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .as_ref()
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Retain")
        );
        let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels.get("appdb.dev/role").map(String::as_str), Some("database"));
        assert_eq!(
            d.servers[0].statefulset.metadata.owner_references.as_ref().unwrap()[0].kind,
            "AppDatabase"
        );
    }

    #[test]
    fn mariadb_flavor_and_delete_policy() {
        let d = build_one(&db(Engine::MariaDB, DeletionPolicy::Delete));
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("mariadb:11.4"));
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "MARIADB_ROOT_PASSWORD")
        );
        let policy = d.servers[0]
            .statefulset
            .spec
            .persistent_volume_claim_retention_policy
            .as_ref()
            .unwrap();
        assert_eq!(policy.when_deleted.as_deref(), Some("Delete"));
        assert!(d.servers[0].config.data.as_ref().unwrap()["appdb.cnf"].contains("gtid_strict_mode"));
    }

    #[test]
    fn services_policy_and_names_are_deterministic() {
        let d = build_one(&db(Engine::MySQL, DeletionPolicy::Retain));
        assert_eq!(
            d.servers[0].headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(d.client.metadata.name.as_deref(), Some("orders"));
        assert!(
            d.client.spec.as_ref().unwrap().cluster_ip.is_none(),
            "the API server allocates it once"
        );
        assert_eq!(d.policy.metadata.name.as_deref(), Some("appdb-db-orders"));
        let from = d.policy.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
            .from
            .as_ref()
            .unwrap()[0]
            .pod_selector
            .clone()
            .unwrap();
        assert_eq!(
            from.match_labels.unwrap().get("appdb.dev/network").map(String::as_str),
            Some("prod")
        );
        assert_eq!(
            rotation_job_name(&db(Engine::MySQL, DeletionPolicy::Retain), "1234"),
            "orders-rotate-1234"
        );
    }

    #[test]
    fn rotation_job_takes_credentials_from_secrets_only() {
        let job = rotation_job(
            &db(Engine::MySQL, DeletionPolicy::Retain),
            "7",
            "img:1",
            "cluster.local",
        );
        let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.args.as_deref(), Some(&["rotate-password".to_string()][..]));
        for name in ["APPDB_ROOT_PASSWORD", "APPDB_ADMIN_PASSWORD"] {
            let e = c.env.as_ref().unwrap().iter().find(|e| e.name == name).unwrap();
            assert!(e.value.is_none() && e.value_from.is_some(), "{name}");
        }
        let host = c.env.as_ref().unwrap().iter().find(|e| e.name == "APPDB_HOST").unwrap();
        assert_eq!(host.value.as_deref(), Some("orders.acme.svc.cluster.local"));
    }

    /// The tunnel Role grants what the plugin checks and what plain `kubectl port-forward` reads, each by name
    /// where RBAC allows it: the database, its Service, and the pods of every server that runs (a copying
    /// migration's new one too); nothing else and nothing more.
    #[test]
    fn tunnel_role_grants_the_plugins_checks_by_name_on_every_running_server() {
        let db = db(Engine::MySQL, DeletionPolicy::Retain);
        let mut copy = ServerPlan::from_spec(&db);
        copy.name = "orders-m1".into();
        let role = tunnel_role(&db, &[ServerPlan::from_spec(&db), copy]);
        let rules = role.rules.unwrap();
        let granted = |verb: &str, group: &str, resource: &str| {
            rules
                .iter()
                .find(|r| {
                    r.verbs == [verb]
                        && r.api_groups.as_deref() == Some(&[group.to_string()][..])
                        && r.resources.as_deref() == Some(&[resource.to_string()][..])
                })
                .map(|r| r.resource_names.clone())
        };
        let pods = Some(Some(vec!["orders-0".to_string(), "orders-m1-0".to_string()]));
        for (verb, group, resource, sub) in crate::plugin::tunnel::NEEDED
            .iter()
            .chain(crate::plugin::tunnel::ALSO_FOR_KUBECTL_PORT_FORWARD)
        {
            let full = if sub.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{sub}")
            };
            let names = granted(verb, group, &full);
            match (*verb, full.as_str()) {
                ("list", "pods") => assert_eq!(names, Some(None), "listing cannot be limited by name"),
                ("get", "pods") | ("create", "pods/portforward") => assert_eq!(names, pods, "{verb} {full}"),
                ("get", "appdatabases") => assert_eq!(names, Some(Some(vec!["orders".into()]))),
                ("get", "services") => assert_eq!(names, Some(Some(vec!["orders".into()]))),
                other => panic!("a check the role does not cover: {other:?}"),
            }
        }
        assert_eq!(rules.len(), 5, "nothing beyond what a tunnel needs: {rules:?}");
    }
}
