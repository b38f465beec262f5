//! One Pod started the way a kubelet starts it: a sandbox (or the node's network for `hostNetwork`), the pod's
//! volumes, then each container with its image's program, its environment, its `command`/`args`, its security
//! context and its volume mounts. Stopping the pod stops every container (SIGTERM, the pod's
//! `terminationGracePeriodSeconds`, SIGKILL) and removes the sandbox.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use super::{
    env::{self, ConfigError, Sources},
    images::{self, Image},
    sandbox::{Container, Launch, Node, Sandbox},
    security::{self, SecurityError},
    volumes::{PodVolumes, VolumeError},
};

/// Where the runner finds the programs images stand for.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The built `appdb-operator`.
    pub operator: PathBuf,
}

/// An image's configuration (what `docker inspect` shows): entrypoint, default arguments and user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: u32,
}

/// The configuration of each image in the table (the Dockerfile's, for the project's own images).
pub fn image_config(image: Image, programs: &Programs) -> Result<ImageConfig, StartError> {
    let operator = programs.operator.display().to_string();
    match image {
        Image::Operator => Ok(ImageConfig {
            entrypoint: vec![operator],
            cmd: vec!["run".into()],
            user: 65532,
        }),
        // The gateway image holds charon, swanctl, iproute2 and the operator binary.
        Image::Gateway => Ok(ImageConfig {
            entrypoint: vec!["/usr/lib/ipsec/charon".into()],
            cmd: vec![],
            user: 0,
        }),
        Image::Session => Ok(ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sleep".into(), "infinity".into()],
            user: 0,
        }),
        Image::MySql | Image::MariaDb => Err(StartError::NotYet(
            "the official database images' entrypoint (initialising the data folder from the environment)",
        )),
    }
}

/// The process a container runs: `command` replaces the entrypoint, `args` the image's default arguments (and a
/// `command` without `args` drops them), as Docker and Kubernetes define it.
pub fn argv(config: &ImageConfig, command: Option<Vec<String>>, args: Option<Vec<String>>) -> Vec<String> {
    match command {
        Some(command) => command.into_iter().chain(args.unwrap_or_default()).collect(),
        None => config
            .entrypoint
            .iter()
            .cloned()
            .chain(args.unwrap_or_else(|| config.cmd.clone()))
            .collect(),
    }
}

/// Why a pod's container does not start; each maps to the waiting reason a kubelet reports.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("ErrImagePull: the pod runner has no program for image \"{0}\"")]
    ImagePull(String),
    #[error("CreateContainerConfigError: {0}")]
    Config(#[from] ConfigError),
    #[error("CreateContainerConfigError: {0}")]
    Security(#[from] SecurityError),
    #[error("FailedMount: {0}")]
    Volume(#[from] VolumeError),
    #[error("the pod runner does not run {0} yet")]
    NotYet(&'static str),
    #[error("RunContainerError: {0}")]
    Run(String),
}

impl StartError {
    /// The container's `waiting.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            StartError::ImagePull(_) => "ErrImagePull",
            StartError::Config(_) | StartError::Security(_) => "CreateContainerConfigError",
            StartError::Volume(_) => "ContainerCreating",
            StartError::NotYet(_) | StartError::Run(_) => "RunContainerError",
        }
    }
}

/// The pod's network: its own sandbox, or its node's namespace.
enum Network {
    Sandbox(Sandbox),
    Host(String),
}

/// A pod whose containers run.
pub struct RunningPod {
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    network: Network,
    pub containers: Vec<(String, Container)>,
    pub volumes: PodVolumes,
    grace: Duration,
    pub dir: PathBuf,
}

impl RunningPod {
    /// Starts `pod` on `node`: its folder under `pods_dir`, its claims under `claims_dir`. Containers start in
    /// order; when one cannot start, those already started are stopped and the reason is returned.
    pub async fn start(
        node: &Node,
        pod: &Pod,
        sources: &Sources,
        programs: &Programs,
        pods_dir: &Path,
        claims_dir: &Path,
    ) -> Result<RunningPod, StartError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let (network, ip) = if host_network {
            (Network::Host(node.netns.clone()), node.gateway)
        } else {
            let sandbox = node.sandbox().await.map_err(StartError::Run)?;
            let ip = sandbox.address;
            (Network::Sandbox(sandbox), ip)
        };
        // The downward API sees the addresses the kubelet reports.
        let mut pod = pod.clone();
        let status = pod.status.get_or_insert_with(PodStatus::default);
        status.pod_ip = Some(ip.to_string());
        status.host_ip = Some(node.gateway.to_string());
        let dir = pods_dir.join(format!(
            "{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            name
        ));
        std::fs::create_dir_all(&dir).map_err(|e| StartError::Run(e.to_string()))?;
        let volumes = PodVolumes::prepare(&pod, sources, &dir, claims_dir)?;
        let netns = match &network {
            Network::Sandbox(s) => s.netns.clone(),
            Network::Host(ns) => ns.clone(),
        };
        let mut running = RunningPod {
            name: name.clone(),
            ip,
            network,
            containers: Vec::new(),
            volumes,
            grace: Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64),
            dir,
        };
        for container in &spec.containers {
            let started = async {
                let reference = container.image.clone().unwrap_or_default();
                let image = images::lookup(&reference).ok_or_else(|| StartError::ImagePull(reference.clone()))?;
                let config = image_config(image, programs)?;
                let environment = env::environment(&pod, container, sources)?;
                let (command, args) = env::command_line(container, &environment);
                let privileges = security::privileges(
                    spec.security_context.as_ref(),
                    container.security_context.as_ref(),
                    config.user,
                )?;
                let mounts = running.volumes.mounts(container)?;
                Container::start(Launch {
                    netns: &netns,
                    hostname: &name,
                    argv: argv(&config, command, args),
                    env: environment,
                    privileges,
                    workdir: container.working_dir.as_deref().map(Path::new),
                    mounts,
                    log: running.dir.join(format!("{}.log", container.name)),
                })
                .map_err(StartError::Run)
            }
            .await;
            match started {
                Ok(c) => running.containers.push((container.name.clone(), c)),
                Err(e) => {
                    running.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(running)
    }

    pub fn container(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// What `kubectl logs` shows for a container.
    pub fn logs(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The pod's network namespace (the node's for `hostNetwork` pods).
    pub fn netns(&self) -> &str {
        match &self.network {
            Network::Sandbox(s) => &s.netns,
            Network::Host(ns) => ns,
        }
    }

    /// The kubelet's deletion: every container gets SIGTERM at once and the grace period, then SIGKILL; the sandbox
    /// goes last. Returns each container's exit code and whether it had to be killed.
    pub async fn stop(&mut self) -> Vec<(String, i32, bool)> {
        let grace = self.grace;
        let stops = self.containers.iter_mut().map(|(name, c)| {
            let name = name.clone();
            async move {
                let (code, killed) = c.stop(grace).await;
                (name, code, killed)
            }
        });
        let results = futures::future::join_all(stops).await;
        if let Network::Sandbox(_) = &self.network {
            let network = std::mem::replace(&mut self.network, Network::Host(String::new()));
            if let Network::Sandbox(s) = network {
                s.remove().await;
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_as_docker_defines() {
        let config = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["run".into()],
            user: 0,
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(argv(&config, None, None), v(&["/entry", "run"]));
        assert_eq!(argv(&config, None, Some(v(&["agent"]))), v(&["/entry", "agent"]));
        assert_eq!(argv(&config, Some(v(&["sh", "-c", "x"])), None), v(&["sh", "-c", "x"]));
        assert_eq!(
            argv(&config, Some(v(&["sh"])), Some(v(&["-c", "y"]))),
            v(&["sh", "-c", "y"])
        );
    }

    #[test]
    fn the_operator_image_runs_as_its_dockerfile_user() {
        let programs = Programs {
            operator: "/bin/op".into(),
        };
        let operator = image_config(Image::Operator, &programs).unwrap();
        assert_eq!(
            (operator.entrypoint.as_slice(), operator.user),
            (&["/bin/op".to_owned()][..], 65532)
        );
        assert_eq!(
            image_config(Image::Gateway, &programs).unwrap().entrypoint,
            ["/usr/lib/ipsec/charon"]
        );
    }
}
