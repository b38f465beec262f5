//! A pod's volumes as the kubelet makes them, each a folder on this machine that the container runtime binds at
//! its `mountPath`:
//!
//! - **Secret and ConfigMap** volumes: one file per key (or per `items` entry), mode `defaultMode` (0644 unless
//!   set) or the item's own `mode`, written the way the kubelet's atomic writer does (a timestamped folder, a
//!   `..data` link swapped in one rename, and one link per key), so that a program never reads half an update.
//!   [`PodVolumes::refresh`] rewrites them when the object changed.
//! - **emptyDir**: an empty folder (mode 0777) that lives as long as the pod.
//! - **persistentVolumeClaim**: a folder per claim, under the runner's claims folder, that outlives the pod (as a
//!   local-path provisioner's volume does), so that a StatefulSet's data survives a restart.
//! - **hostPath**: the machine's own path (the gateway's `/dev/net/tun`).
//! - `fsGroup`: the group owns emptyDir, claim and projected files, folders get setgid and group write, and
//!   projected files group read, as the kubelet's ownership management does.
//!
//! Any other volume type fails the pod (`FailedMount`) with the type named, rather than being silently skipped.

use std::{
    collections::BTreeMap,
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use super::env::Sources;

/// A volume bound into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Why a pod's volumes cannot be set up (the kubelet's `FailedMount`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : secret \"{name}\" not found")]
    SecretNotFound { volume: String, name: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : configmap \"{name}\" not found")]
    ConfigMapNotFound { volume: String, name: String },
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : key \"{key}\" not found in {name}")]
    KeyNotFound { volume: String, name: String, key: String },
    #[error("volume \"{volume}\": {kind} volumes are not supported by the pod runner")]
    Unsupported { volume: String, kind: &'static str },
    #[error("container \"{container}\" mounts volume \"{volume}\", which the pod does not declare")]
    NotDeclared { container: String, volume: String },
    #[error("volume \"{volume}\": {message}")]
    Io { volume: String, message: String },
}

/// One file of a Secret or ConfigMap volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectedFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// The mode of projected files when the volume does not say (0644).
pub const DEFAULT_MODE: u32 = 0o644;

/// The files of a Secret or ConfigMap volume: every key, or only `items` (each of which must exist unless the
/// volume is optional).
pub fn projected_files(
    volume: &str,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
) -> Result<Vec<ProjectedFile>, VolumeError> {
    let mode = default_mode.map(|m| m as u32).unwrap_or(DEFAULT_MODE);
    match items {
        None => Ok(data
            .iter()
            .map(|(key, bytes)| ProjectedFile {
                path: key.clone(),
                bytes: bytes.clone(),
                mode,
            })
            .collect()),
        Some(items) => items
            .iter()
            .map(|item| {
                let bytes = data.get(&item.key).ok_or_else(|| VolumeError::KeyNotFound {
                    volume: volume.to_owned(),
                    name: name.to_owned(),
                    key: item.key.clone(),
                })?;
                Ok(ProjectedFile {
                    path: item.path.clone(),
                    bytes: bytes.clone(),
                    mode: item.mode.map(|m| m as u32).unwrap_or(mode),
                })
            })
            .collect(),
    }
}

/// What one declared volume is, resolved against the namespace's objects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Secret or ConfigMap: its files (empty when an optional object is missing).
    Projected(Vec<ProjectedFile>),
    EmptyDir,
    Claim(String),
    HostPath(PathBuf),
}

fn kind_of(volume: &Volume, sources: &Sources) -> Result<Kind, VolumeError> {
    let name = volume.name.clone();
    if let Some(s) = &volume.secret {
        let secret = s.secret_name.clone().unwrap_or_default();
        return match sources.secrets.get(&secret) {
            Some(data) => {
                projected_files(&name, &secret, data, s.items.as_deref(), s.default_mode).map(Kind::Projected)
            }
            None if s.optional == Some(true) => Ok(Kind::Projected(Vec::new())),
            None => Err(VolumeError::SecretNotFound {
                volume: name,
                name: secret,
            }),
        };
    }
    if let Some(c) = &volume.config_map {
        let map = c.name.clone();
        return match sources.config_maps.get(&map) {
            Some(data) => {
                let bytes: BTreeMap<String, Vec<u8>> =
                    data.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
                projected_files(&name, &map, &bytes, c.items.as_deref(), c.default_mode).map(Kind::Projected)
            }
            None if c.optional == Some(true) => Ok(Kind::Projected(Vec::new())),
            None => Err(VolumeError::ConfigMapNotFound {
                volume: name,
                name: map,
            }),
        };
    }
    if volume.empty_dir.is_some() {
        return Ok(Kind::EmptyDir);
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        return Ok(Kind::Claim(claim.claim_name.clone()));
    }
    if let Some(host) = &volume.host_path {
        return Ok(Kind::HostPath(PathBuf::from(&host.path)));
    }
    let kind = if volume.projected.is_some() {
        "projected"
    } else if volume.csi.is_some() {
        "csi"
    } else if volume.nfs.is_some() {
        "nfs"
    } else {
        "this kind of"
    };
    Err(VolumeError::Unsupported { volume: name, kind })
}

/// A pod's volumes, set up in the pod's folder.
#[derive(Debug)]
pub struct PodVolumes {
    paths: BTreeMap<String, PathBuf>,
    fs_group: Option<u32>,
}

impl PodVolumes {
    /// Sets up every volume of `pod`: projected and emptyDir volumes under `pod_dir`, claims under
    /// `claims_dir/<namespace>/<claim>` (kept after the pod).
    pub fn prepare(pod: &Pod, sources: &Sources, pod_dir: &Path, claims_dir: &Path) -> Result<PodVolumes, VolumeError> {
        let spec = pod.spec.as_ref();
        let fs_group = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .map(|g| g as u32);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut paths = BTreeMap::new();
        for volume in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            let io = |e: std::io::Error| VolumeError::Io {
                volume: volume.name.clone(),
                message: e.to_string(),
            };
            let path = match kind_of(volume, sources)? {
                Kind::Projected(files) => {
                    let dir = pod_dir.join("volumes").join(&volume.name);
                    write_atomically(&dir, &files, fs_group).map_err(io)?;
                    dir
                }
                Kind::EmptyDir => {
                    let dir = pod_dir.join("volumes").join(&volume.name);
                    shared_folder(&dir, fs_group).map_err(io)?;
                    dir
                }
                Kind::Claim(claim) => {
                    let dir = claims_dir.join(&namespace).join(claim);
                    if !dir.exists() {
                        shared_folder(&dir, fs_group).map_err(io)?;
                    }
                    dir
                }
                Kind::HostPath(path) => path,
            };
            paths.insert(volume.name.clone(), path);
        }
        Ok(PodVolumes { paths, fs_group })
    }

    /// Rewrites the Secret and ConfigMap volumes whose objects changed; true when a file changed.
    pub fn refresh(&self, pod: &Pod, sources: &Sources) -> Result<bool, VolumeError> {
        let mut changed = false;
        for volume in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            if let Kind::Projected(files) = kind_of(volume, sources)?
                && let Some(dir) = self.paths.get(&volume.name)
                && current_files(dir) != as_written(&files, self.fs_group)
            {
                write_atomically(dir, &files, self.fs_group).map_err(|e| VolumeError::Io {
                    volume: volume.name.clone(),
                    message: e.to_string(),
                })?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// The container's `volumeMounts`, with `subPath` resolved inside the volume.
    pub fn mounts(&self, container: &Container) -> Result<Vec<Mount>, VolumeError> {
        container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let source = self.paths.get(&m.name).ok_or_else(|| VolumeError::NotDeclared {
                    container: container.name.clone(),
                    volume: m.name.clone(),
                })?;
                let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                    Some(sub) => source.join(sub),
                    None => source.clone(),
                };
                Ok(Mount {
                    source,
                    target: m.mount_path.clone(),
                    read_only: m.read_only == Some(true),
                })
            })
            .collect()
    }
}

fn shared_folder(dir: &Path, fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    match fs_group {
        Some(gid) => {
            std::os::unix::fs::chown(dir, None, Some(gid))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2775))
        }
        None => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)),
    }
}

/// The files as [`write_atomically`] leaves them (fsGroup adds group read).
fn as_written(files: &[ProjectedFile], fs_group: Option<u32>) -> Vec<ProjectedFile> {
    let mut files: Vec<ProjectedFile> = files
        .iter()
        .map(|f| ProjectedFile {
            mode: if fs_group.is_some() { f.mode | 0o040 } else { f.mode },
            ..f.clone()
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The files a projected volume shows now (through its `..data` link).
fn current_files(dir: &Path) -> Vec<ProjectedFile> {
    let data = dir.join("..data");
    let mut files = Vec::new();
    collect(&data, &data, &mut files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<ProjectedFile>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
        } else if let (Ok(bytes), Ok(meta)) = (std::fs::read(&path), entry.metadata()) {
            files.push(ProjectedFile {
                path: path.strip_prefix(root).unwrap_or(&path).display().to_string(),
                bytes,
                mode: meta.permissions().mode() & 0o7777,
            });
        }
    }
}

/// The kubelet's atomic writer: the files go into a fresh hidden folder, `..data` is switched to it with one
/// rename, and each top-level name is a link through `..data`.
fn write_atomically(dir: &Path, files: &[ProjectedFile], fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    for file in files {
        let path = fresh.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &file.bytes)?;
        let mode = match fs_group {
            Some(gid) => {
                std::os::unix::fs::chown(&path, None, Some(gid))?;
                file.mode | 0o040
            }
            None => file.mode,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let swap = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&swap);
    symlink(&stamp, &swap)?;
    std::fs::rename(&swap, dir.join("..data"))?;
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.path.split('/').next().map(str::to_owned))
        .collect();
    for name in &names {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link)?;
        }
    }
    // Keys that went away lose their links; the previous generation goes.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !names.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "acme"}, "spec": spec})).unwrap()
    }

    fn sources(password: &str) -> Sources {
        Sources {
            secrets: [(
                "gw".to_owned(),
                [
                    ("swanctl.conf".to_owned(), b"conn".to_vec()),
                    ("password".to_owned(), password.as_bytes().to_vec()),
                ]
                .into(),
            )]
            .into(),
            config_maps: [("cfg".to_owned(), [("my.cnf".to_owned(), "[mysqld]".to_owned())].into())].into(),
        }
    }

    fn spec() -> serde_json::Value {
        json!({
            "containers": [{"name": "c", "volumeMounts": [
                {"name": "config", "mountPath": "/etc/gw", "readOnly": true},
                {"name": "run", "mountPath": "/run"},
                {"name": "data", "mountPath": "/var/lib/mysql"},
                {"name": "cnf", "mountPath": "/etc/mysql/conf.d/my.cnf", "subPath": "my.cnf"}
            ]}],
            "volumes": [
                {"name": "config", "secret": {"secretName": "gw", "defaultMode": 0o400}},
                {"name": "run", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-p"}},
                {"name": "cnf", "configMap": {"name": "cfg", "items": [{"key": "my.cnf", "path": "my.cnf", "mode": 0o444}]}}
            ]
        })
    }

    #[test]
    fn items_pick_keys_and_modes_and_a_missing_key_is_named() {
        let data: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"1".to_vec())].into();
        let items: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "a", "path": "sub/x", "mode": 0o600}])).unwrap();
        let files = projected_files("v", "s", &data, Some(&items), Some(0o400)).unwrap();
        assert_eq!(
            files,
            [ProjectedFile {
                path: "sub/x".into(),
                bytes: b"1".to_vec(),
                mode: 0o600
            }]
        );
        let missing: Vec<KeyToPath> = serde_json::from_value(json!([{"key": "b", "path": "b"}])).unwrap();
        assert_eq!(
            projected_files("v", "s", &data, Some(&missing), None)
                .unwrap_err()
                .to_string(),
            "MountVolume.SetUp failed for volume \"v\" : key \"b\" not found in s"
        );
        assert_eq!(
            projected_files("v", "s", &data, None, None).unwrap()[0].mode,
            DEFAULT_MODE
        );
    }

    #[test]
    fn volumes_are_folders_with_the_kubelets_layout_and_refresh() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = pod(spec());
        let volumes = PodVolumes::prepare(
            &pod,
            &sources("one"),
            &tmp.path().join("pod"),
            &tmp.path().join("claims"),
        )
        .unwrap();
        let mounts = volumes.mounts(&pod.spec.as_ref().unwrap().containers[0]).unwrap();
        let config = &mounts[0].source;
        assert!(mounts[0].read_only);
        assert_eq!(std::fs::read_to_string(config.join("password")).unwrap(), "one");
        let mode = std::fs::metadata(config.join("password")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        assert!(std::fs::symlink_metadata(config.join("password")).unwrap().is_symlink());
        assert_eq!(mounts[2].source, tmp.path().join("claims/acme/data-p"));
        assert_eq!(mounts[3].source, tmp.path().join("pod/volumes/cnf/my.cnf"));
        assert_eq!(std::fs::read_to_string(&mounts[3].source).unwrap(), "[mysqld]");
        let run_mode = std::fs::metadata(&mounts[1].source).unwrap().permissions().mode() & 0o777;
        assert_eq!(run_mode, 0o777);

        assert!(!volumes.refresh(&pod, &sources("one")).unwrap(), "nothing changed");
        assert!(volumes.refresh(&pod, &sources("two")).unwrap());
        assert_eq!(std::fs::read_to_string(config.join("password")).unwrap(), "two");
        let generations = std::fs::read_dir(config)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..") && e.path().is_dir() && !e.path().is_symlink()
            })
            .count();
        assert_eq!(generations, 1, "the previous generation is removed");
    }

    #[test]
    fn missing_objects_and_unknown_kinds_fail_the_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = Sources::default();
        let err = PodVolumes::prepare(&pod(spec()), &empty, tmp.path(), tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "MountVolume.SetUp failed for volume \"config\" : secret \"gw\" not found"
        );
        let optional = pod(json!({"containers": [], "volumes": [
            {"name": "o", "secret": {"secretName": "absent", "optional": true}}]}));
        assert!(PodVolumes::prepare(&optional, &empty, tmp.path(), tmp.path()).is_ok());
        let nfs = pod(json!({"containers": [], "volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}));
        assert_eq!(
            PodVolumes::prepare(&nfs, &empty, tmp.path(), tmp.path()).unwrap_err(),
            VolumeError::Unsupported {
                volume: "n".into(),
                kind: "nfs"
            }
        );
        let undeclared: Container =
            serde_json::from_value(json!({"name": "c", "volumeMounts": [{"name": "x", "mountPath": "/x"}]})).unwrap();
        let volumes = PodVolumes::prepare(&pod(json!({"containers": []})), &empty, tmp.path(), tmp.path()).unwrap();
        assert!(matches!(
            volumes.mounts(&undeclared),
            Err(VolumeError::NotDeclared { .. })
        ));
    }
}
