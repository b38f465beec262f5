//! One Pod started the way a kubelet starts it: a sandbox (or the node's network for `hostNetwork`), the pod's
//! volumes, then each container with its image's program, its environment, its `command`/`args`, its security
//! context and its volume mounts. Stopping the pod stops every container (SIGTERM, the pod's
//! `terminationGracePeriodSeconds`, SIGKILL) and removes the sandbox.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Pod, PodStatus, Probe},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::dbserver::Engine;

use super::{
    env::{self, ConfigError, Sources},
    images::{self, Image},
    sandbox::{Container, Launch, Node, Sandbox},
    security::{self, SecurityError},
    volumes::{Mount, PodVolumes, VolumeError},
};

/// Where the runner finds the programs images stand for.
#[derive(Clone, Debug)]
pub struct Programs {
    /// The built `appdb-operator`.
    pub operator: PathBuf,
}

/// An image's configuration (what `docker inspect` shows): entrypoint, default arguments, user and environment,
/// plus the image's own files where the machine's would be wrong (`layers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: u32,
    pub env: Vec<(String, String)>,
    pub layers: Vec<Layer>,
    /// Folders of this machine the image's programs come from, bound read-only under [`IMAGE_ROOT`] so that no
    /// volume of the pod (an emptyDir on `/tmp`, say) can hide them.
    pub binds: Vec<Mount>,
}

/// Where the image's own programs appear inside its containers.
pub const IMAGE_ROOT: &str = "/opt/appdb-image";

/// A folder of the image (its files, as the image ships them), given to each container as its own copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub path: String,
    pub files: Vec<(String, String)>,
}

/// The MySQL and MariaDB images' `/etc/mysql`: the server's defaults and `conf.d` for the pod's own files.
fn database_layer(engine: Engine) -> Layer {
    let engine_defaults = match engine {
        // MySQL's Debian build points secure-file-priv at a folder the image does not have.
        Engine::MySql => "secure-file-priv = NULL\n",
        Engine::MariaDb => "",
    };
    Layer {
        path: "/etc/mysql".into(),
        files: vec![
            (
                "my.cnf".into(),
                format!(
                    "[mysqld]\nskip-name-resolve\ndatadir = /var/lib/mysql\nsocket = /var/run/mysqld/mysqld.sock\n\
                     pid-file = /var/run/mysqld/mysqld.pid\n{engine_defaults}\n[client]\n\
                     socket = /var/run/mysqld/mysqld.sock\n\n!includedir /etc/mysql/conf.d/\n"
                ),
            ),
            ("conf.d/README".into(), "Files here are read after my.cnf.\n".into()),
        ],
    }
}

/// The testkit's image files (the database entrypoint shim, the DNS server), as containers see them.
fn testkit_images() -> Mount {
    Mount {
        source: Path::new(env!("CARGO_MANIFEST_DIR")).join("images"),
        target: format!("{IMAGE_ROOT}/testkit"),
        read_only: true,
    }
}

/// The configuration of each image in the table (the Dockerfile's, for the project's own images).
pub fn image_config(image: Image, programs: &Programs) -> Result<ImageConfig, StartError> {
    let operator_dir = programs.operator.parent().unwrap_or(Path::new("/")).to_owned();
    let operator_file = programs
        .operator
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let operator_bind = Mount {
        source: operator_dir,
        target: format!("{IMAGE_ROOT}/operator"),
        read_only: true,
    };
    let operator = format!("{IMAGE_ROOT}/operator/{operator_file}");
    let base = ImageConfig {
        entrypoint: vec![],
        cmd: vec![],
        user: 0,
        env: vec![],
        layers: vec![],
        binds: vec![],
    };
    match image {
        Image::Operator => Ok(ImageConfig {
            entrypoint: vec![operator],
            cmd: vec!["run".into()],
            user: 65532,
            // The image's binary is on its PATH (/usr/local/bin): exec probes name it `appdb-operator`.
            env: vec![(
                "PATH".into(),
                format!("{IMAGE_ROOT}/operator:{}", super::sandbox::IMAGE_PATH),
            )],
            binds: vec![operator_bind],
            ..base
        }),
        // The gateway image holds charon, swanctl, iproute2 and the operator binary.
        Image::Gateway => Ok(ImageConfig {
            entrypoint: vec!["/usr/lib/ipsec/charon".into()],
            env: vec![(
                "PATH".into(),
                format!("{IMAGE_ROOT}/operator:{}", super::sandbox::IMAGE_PATH),
            )],
            binds: vec![operator_bind],
            ..base
        }),
        Image::Dns => Ok(ImageConfig {
            entrypoint: vec!["python3".into(), format!("{IMAGE_ROOT}/testkit/dns.py")],
            cmd: vec!["/etc/appdb-dns/records".into()],
            binds: vec![testkit_images()],
            ..base
        }),
        // A shell, python3 and both engines' clients (`mysql` is MySQL's).
        Image::Session => Ok(ImageConfig {
            cmd: vec!["sleep".into(), "infinity".into()],
            env: vec![("PATH".into(), Engine::MySql.path_env().to_string_lossy().into_owned())],
            ..base
        }),
        Image::MySql | Image::MariaDb => {
            let (engine, flavour, server) = match image {
                Image::MySql => (Engine::MySql, "mysql", "mysqld"),
                _ => (Engine::MariaDb, "mariadb", "mariadbd"),
            };
            engine.require();
            Ok(ImageConfig {
                entrypoint: vec![
                    "sh".into(),
                    format!("{IMAGE_ROOT}/testkit/db-entrypoint.sh"),
                    flavour.into(),
                ],
                cmd: vec![server.into()],
                // The engine's programs first: the image's `mysql` is MySQL's client, not this machine's MariaDB one.
                env: vec![("PATH".into(), engine.path_env().to_string_lossy().into_owned())],
                layers: vec![database_layer(engine)],
                binds: vec![testkit_images()],
                ..base
            })
        }
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

/// Each container's own copy of its image's layers, to bind before its volumes.
fn layers(dir: &Path, layers: &[Layer]) -> std::io::Result<Vec<Mount>> {
    use std::os::unix::fs::PermissionsExt;
    layers
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            let root = dir.join(i.to_string());
            std::fs::create_dir_all(&root)?;
            for (name, text) in &layer.files {
                let path = root.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, text)?;
            }
            for entry in walk(&root) {
                let mode = if entry.is_dir() { 0o755 } else { 0o644 };
                std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(Mount {
                source: root,
                target: layer.path.clone(),
                read_only: false,
            })
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}

/// What the cluster gives every pod beyond its own spec: the Service rules loaded into its network before its
/// containers start, DNS (`/etc/resolv.conf` for `dnsPolicy: ClusterFirst`, and `/etc/hosts`), and the API
/// server's address with the service account's token and CA (unless `automountServiceAccountToken: false`).
#[derive(Clone, Debug, Default)]
pub struct ClusterSetup {
    pub nft: Vec<String>,
    pub dns: Option<std::net::Ipv4Addr>,
    pub cluster_domain: String,
    /// (CA certificate PEM, token).
    pub api: Option<(String, String)>,
}

/// Environment variables, in order.
type Environment = Vec<(String, String)>;

/// The files and environment [`ClusterSetup`] gives one pod.
fn cluster_files(
    pod: &Pod,
    ip: std::net::Ipv4Addr,
    setup: &ClusterSetup,
    dir: &Path,
) -> std::io::Result<(Vec<Mount>, Environment)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let host_network = spec.host_network == Some(true);
    let mut mounts = Vec::new();
    // containerd sets HOSTNAME to the pod's hostname in every container.
    let mut env = vec![(
        "HOSTNAME".to_owned(),
        if host_network {
            String::new()
        } else {
            spec.hostname.clone().unwrap_or_else(|| name.clone())
        },
    )];
    env.retain(|(_, v)| !v.is_empty());
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let policy = spec.dns_policy.clone().unwrap_or_else(|| "ClusterFirst".into());
    let cluster_dns = match policy.as_str() {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    if let (true, Some(dns)) = (cluster_dns, setup.dns) {
        let domain = &setup.cluster_domain;
        std::fs::write(
            etc.join("resolv.conf"),
            format!("search {namespace}.svc.{domain} svc.{domain} {domain}\nnameserver {dns}\noptions ndots:5\n"),
        )?;
        mounts.push(Mount {
            source: etc.join("resolv.conf"),
            target: "/etc/resolv.conf".into(),
            read_only: true,
        });
    }
    if !host_network {
        let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
        let fqdn = match &spec.subdomain {
            Some(sub) => format!("{hostname}.{sub}.{namespace}.svc.{} ", setup.cluster_domain),
            None => String::new(),
        };
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{fqdn}{hostname}\n"),
        )?;
        mounts.push(Mount {
            source: etc.join("hosts"),
            target: "/etc/hosts".into(),
            read_only: true,
        });
    }
    if let Some((ca, token)) = &setup.api
        && spec.automount_service_account_token != Some(false)
    {
        let account = dir.join("serviceaccount");
        std::fs::create_dir_all(&account)?;
        std::fs::write(account.join("token"), token)?;
        std::fs::write(account.join("ca.crt"), ca)?;
        std::fs::write(account.join("namespace"), &namespace)?;
        use std::os::unix::fs::PermissionsExt;
        for f in ["token", "ca.crt", "namespace"] {
            std::fs::set_permissions(account.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::set_permissions(&account, std::fs::Permissions::from_mode(0o755))?;
        mounts.push(Mount {
            source: account,
            target: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            read_only: true,
        });
        let host = super::api_access::KUBERNETES_SERVICE_IP.to_string();
        env.extend([
            ("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), "443".to_owned()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), "443".to_owned()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{host}:443")),
        ]);
    }
    Ok((mounts, env))
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
            StartError::Run(_) => "RunContainerError",
        }
    }
}

/// The pod's network: its own sandbox, or its node's namespace.
enum Network {
    Sandbox(Sandbox),
    Host(String),
}

/// How a container was started, kept to restart it.
struct ContainerLaunch {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    privileges: security::Privileges,
    workdir: Option<PathBuf>,
    mounts: Vec<Mount>,
    log: PathBuf,
}

/// A pod whose containers run.
pub struct RunningPod {
    launches: Vec<ContainerLaunch>,
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    network: Network,
    pub containers: Vec<(String, Container)>,
    pub volumes: PodVolumes,
    grace: Duration,
    pub dir: PathBuf,
    /// (container, port name, number): what named probe ports resolve to.
    named_ports: Vec<(String, String, u16)>,
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
        setup: &ClusterSetup,
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
        // A new pod of the same name (a StatefulSet's next pod) starts with empty emptyDirs and fresh logs.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| StartError::Run(e.to_string()))?;
        let volumes = PodVolumes::prepare(&pod, sources, &dir, claims_dir)?;
        if let Network::Sandbox(sandbox) = &network {
            for rules in &setup.nft {
                super::sandbox::nft(&sandbox.netns, rules)
                    .await
                    .map_err(StartError::Run)?;
            }
        }
        let (cluster_mounts, cluster_env) = cluster_files(&pod, ip, setup, &dir)
            .map_err(|e| StartError::Run(format!("the pod's cluster files: {e}")))?;
        let mut running = RunningPod {
            launches: Vec::new(),
            name: name.clone(),
            ip,
            network,
            containers: Vec::new(),
            volumes,
            grace: Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64),
            dir,
            named_ports: spec
                .containers
                .iter()
                .flat_map(|c| {
                    c.ports
                        .iter()
                        .flatten()
                        .filter_map(|p| Some((c.name.clone(), p.name.clone()?, p.container_port as u16)))
                })
                .collect(),
        };
        for container in &spec.containers {
            let started = async {
                let reference = container.image.clone().unwrap_or_default();
                let image = images::lookup(&reference).ok_or_else(|| StartError::ImagePull(reference.clone()))?;
                let config = image_config(image, programs)?;
                let mut environment = cluster_env.clone();
                for (name, value) in env::environment(&pod, container, sources)? {
                    environment.retain(|(n, _)| *n != name);
                    environment.push((name, value));
                }
                // The image's ENV, unless the container sets the same name.
                for (name, value) in config.env.iter().rev() {
                    if !environment.iter().any(|(n, _)| n == name) {
                        environment.insert(0, (name.clone(), value.clone()));
                    }
                }
                let (command, args) = env::command_line(container, &environment);
                let privileges = security::privileges(
                    spec.security_context.as_ref(),
                    container.security_context.as_ref(),
                    config.user,
                )?;
                let mut mounts = config.binds.clone();
                mounts.extend(
                    layers(&running.dir.join("layers").join(&container.name), &config.layers)
                        .map_err(|e| StartError::Run(format!("the image's files: {e}")))?,
                );
                mounts.extend(cluster_mounts.iter().cloned());
                mounts.extend(running.volumes.mounts(container)?);
                let launch = ContainerLaunch {
                    argv: argv(&config, command, args),
                    env: environment,
                    privileges,
                    workdir: container.working_dir.as_ref().map(PathBuf::from),
                    mounts,
                    log: running.dir.join(format!("{}.log", container.name)),
                };
                let started = running.launch(&launch)?;
                Ok((launch, started))
            }
            .await;
            match started {
                Ok((launch, c)) => {
                    running.containers.push((container.name.clone(), c));
                    running.launches.push(launch);
                }
                Err(e) => {
                    running.stop().await;
                    return Err(e);
                }
            }
        }
        Ok(running)
    }

    fn launch(&self, launch: &ContainerLaunch) -> Result<Container, StartError> {
        Container::start(Launch {
            netns: self.netns(),
            hostname: &self.name,
            argv: launch.argv.clone(),
            env: launch.env.clone(),
            privileges: launch.privileges.clone(),
            workdir: launch.workdir.as_deref(),
            mounts: launch.mounts.clone(),
            log: launch.log.clone(),
        })
        .map_err(StartError::Run)
    }

    /// The kubelet's restart of one container (its process exited, or its liveness probe failed): stopped with the
    /// grace period if it still runs, then started again with the same launch, in the same sandbox and volumes.
    /// Its log goes on (what `kubectl logs --previous` would separate).
    pub async fn restart_container(&mut self, name: &str) -> Result<(), StartError> {
        let index = self
            .containers
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| StartError::Run(format!("no container {name}")))?;
        let grace = self.grace;
        self.containers[index].1.stop(grace).await;
        let started = self.launch(&self.launches[index])?;
        self.containers[index].1 = started;
        Ok(())
    }

    pub fn container(&mut self, name: &str) -> Option<&mut Container> {
        self.containers.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Runs one probe of a container once: `exec` inside the container, `tcpSocket` from the pod's network
    /// (`httpGet` is not run yet: an error says so, never a pass).
    pub async fn probe(&self, container: &str, probe: &Probe) -> Result<bool, String> {
        let (_, c) = self
            .containers
            .iter()
            .find(|(n, _)| n == container)
            .ok_or_else(|| format!("no container {container}"))?;
        if let Some(command) = probe.exec.as_ref().and_then(|e| e.command.as_ref()) {
            return Ok(c.exec(command).await?.status.success());
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = self.probe_port(container, &tcp.port)?;
            let host = tcp.host.clone().unwrap_or_else(|| self.ip.to_string());
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", self.netns(), "timeout", "1", "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{host}/{port}"))
                .output()
                .await
                .map_err(|e| e.to_string())?;
            return Ok(out.status.success());
        }
        if let Some(http) = &probe.http_get {
            let port = self.probe_port(container, &http.port)?;
            let host = http.host.clone().unwrap_or_else(|| self.ip.to_string());
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let scheme = http.scheme.as_deref().unwrap_or("HTTP");
            if scheme != "HTTP" {
                return Err(format!("httpGet with scheme {scheme} is not run by the pod runner"));
            }
            let headers: String = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| format!("{}: {}\r\n", h.name, h.value))
                .collect();
            let request = http_probe_request(&host, port, &path, &headers);
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", self.netns(), "timeout", "2", "bash", "-c"])
                .arg(format!(
                    "exec 3<>/dev/tcp/{host}/{port} && printf %s {} >&3 && head -c 256 <&3",
                    shell_quote(&request)
                ))
                .output()
                .await
                .map_err(|e| e.to_string())?;
            return Ok(http_probe_passed(&String::from_utf8_lossy(&out.stdout)));
        }
        Err("the probe has no handler (exec, tcpSocket or httpGet)".into())
    }

    /// A probe's port: a number, or the name of one of the container's ports.
    fn probe_port(&self, container: &str, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(p) => Ok(*p as u16),
            IntOrString::String(name) => self
                .named_ports
                .iter()
                .find(|(c, n, _)| c == container && n == name)
                .map(|(_, _, number)| *number)
                .ok_or_else(|| format!("container {container} has no port named {name}")),
        }
    }

    /// Runs a command in a container (`kubectl exec`).
    pub async fn exec(&self, container: &str, argv: &[&str]) -> Result<std::process::Output, String> {
        let (_, c) = self
            .containers
            .iter()
            .find(|(n, _)| n == container)
            .ok_or_else(|| format!("no container {container}"))?;
        let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
        c.exec(&argv).await
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

/// The request an httpGet probe sends, as the kubelet does (HTTP/1.1, its User-Agent, the probe's headers).
pub fn http_probe_request(host: &str, port: u16, path: &str, headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
    )
}

/// The kubelet's verdict on an HTTP response: success for a status from 200 to 399.
pub fn http_probe_passed(response: &str) -> bool {
    response
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_probes_pass_on_2xx_and_3xx_only() {
        assert!(http_probe_passed("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(http_probe_passed("HTTP/1.0 302 Found\r\nLocation: /x\r\n"));
        assert!(!http_probe_passed("HTTP/1.1 404 Not Found\r\n"));
        assert!(!http_probe_passed("HTTP/1.1 500 Internal Server Error\r\n"));
        assert!(!http_probe_passed(""), "no answer fails");
        let request = http_probe_request("10.244.0.5", 8080, "/healthz", "X-Probe: yes\r\n");
        assert!(request.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.244.0.5:8080\r\n"));
        assert!(request.contains("X-Probe: yes\r\n") && request.ends_with("\r\n\r\n"));
    }

    #[test]
    fn command_and_args_replace_entrypoint_and_cmd_as_docker_defines() {
        let config = ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["run".into()],
            user: 0,
            env: vec![],
            layers: vec![],
            binds: vec![],
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
            (&["/opt/appdb-image/operator/op".to_owned()][..], 65532)
        );
        // The program's folder is bound read-only where no volume of the pod can hide it.
        assert_eq!(operator.binds[0].source, Path::new("/bin"));
        assert!(operator.binds[0].read_only);
        assert_eq!(
            image_config(Image::Gateway, &programs).unwrap().entrypoint,
            ["/usr/lib/ipsec/charon"]
        );
    }
}
