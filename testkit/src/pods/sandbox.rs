//! Pods as real processes on this machine, the way a container runtime starts them:
//!
//! - a **node**: a network namespace of its own holding a bridge (`cni0`, 10.244.0.1/24), so that nothing a test
//!   starts touches the machine's own network, and concurrent tests each have their own pod range;
//! - a **pod sandbox**: a network namespace with `eth0` (a veth whose peer is on the node's bridge), an address
//!   from the node's range and a default route through the bridge;
//! - a **container**: its command as PID 1 of its own PID namespace (and UTS namespace: hostname = pod name, mount
//!   namespace with its own `/proc`), with the user, capability bounding set and `no_new_privs` of its security
//!   context applied by `setpriv`. Stopping it sends SIGTERM to PID 1, waits for the grace period and SIGKILLs the
//!   namespace, as the kubelet does; like any PID 1, a process that installed no SIGTERM handler ignores SIGTERM.
//!
//! Every namespace is removed when its owner is stopped or dropped.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tokio::process::{Child, Command};

use super::{
    security::{Privileges, setpriv_args},
    volumes::Mount,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A node: the network namespace pods attach to.
pub struct Node {
    pub netns: String,
    pub gateway: Ipv4Addr,
    /// The node's own address outside the pod range, as a kind node has on its Docker network: where the API
    /// server answers, so that policies can allow it by ipBlock as on a real cluster (ipBlock never matches pods).
    pub address: Ipv4Addr,
    next_host: AtomicU32,
}

impl Node {
    pub const BRIDGE: &'static str = "cni0";
    /// kind's first node address.
    pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);

    pub async fn start() -> Result<Node, String> {
        let netns = unique("appdb-node-");
        ip(&["netns", "add", &netns]).await?;
        let node = Node {
            netns,
            gateway: Ipv4Addr::new(10, 244, 0, 1),
            address: Self::ADDRESS,
            next_host: AtomicU32::new(2),
        };
        let ns = node.netns.as_str();
        for args in [
            &["-n", ns, "link", "set", "lo", "up"][..],
            &["-n", ns, "addr", "add", "172.18.0.2/32", "dev", "lo"],
            &["-n", ns, "link", "add", Self::BRIDGE, "type", "bridge"],
            &["-n", ns, "addr", "add", "10.244.0.1/24", "dev", Self::BRIDGE],
            &["-n", ns, "link", "set", Self::BRIDGE, "up"],
        ] {
            ip(args).await?;
        }
        // The node routes between its pods and the outside segment, and translates load balancer addresses.
        in_netns(ns, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]).await?;
        nft(ns, &format!(
            "table ip {LB_TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n  }}\n}}"
        ))
        .await?;
        Ok(node)
    }

    /// A segment between the node and `outside` (a namespace the test made, say the customer's premises):
    /// `node_address` on the node's end, `outside_address` on the other (both `a.b.c.d/len`). Routes are the
    /// test's to add.
    pub async fn attach_outside(&self, outside: &str, node_address: &str, outside_address: &str) -> Result<(), String> {
        let (node_if, outside_if) = ("pub0", unique("o").chars().take(15).collect::<String>());
        let ns = self.netns.as_str();
        for args in [
            &[
                "-n",
                ns,
                "link",
                "add",
                node_if,
                "type",
                "veth",
                "peer",
                "name",
                &outside_if,
                "netns",
                outside,
            ][..],
            &["-n", ns, "addr", "add", node_address, "dev", node_if],
            &["-n", ns, "link", "set", node_if, "up"],
            &["-n", outside, "addr", "add", outside_address, "dev", &outside_if],
            &["-n", outside, "link", "set", &outside_if, "up"],
        ] {
            ip(args).await?;
        }
        Ok(())
    }

    /// A LoadBalancer address as a cloud's network load balancer gives it with `externalTrafficPolicy: Local`:
    /// UDP to `address` on `ports` reaches `pod`, with the client's source address kept.
    pub async fn expose_load_balancer(&self, address: Ipv4Addr, pod: Ipv4Addr, ports: &[u16]) -> Result<(), String> {
        let port_list: Vec<String> = ports.iter().map(u16::to_string).collect();
        // One chain per address, so that exposing it again (a new pod behind it) replaces the translation.
        let chain = format!("lb_{}", address.to_string().replace('.', "_"));
        nft(
            &self.netns,
            &format!(
                "add chain ip {LB_TABLE} {chain}\nflush chain ip {LB_TABLE} {chain}\n\
                 add rule ip {LB_TABLE} {chain} udp dport {{ {} }} dnat to {pod}",
                port_list.join(", ")
            ),
        )
        .await?;
        let jump = format!("ip daddr {address} jump {chain}");
        let listed = nft_output(&self.netns, &format!("list chain ip {LB_TABLE} prerouting")).await?;
        if !listed.contains(&jump) {
            nft(&self.netns, &format!("add rule ip {LB_TABLE} prerouting {jump}")).await?;
        }
        // The previous pod's translations go, as kube-proxy deletes them for a removed endpoint.
        for port in ports {
            forget_udp_translation(&self.netns, address, *port, None).await;
        }
        Ok(())
    }

    /// A pod's network namespace on this node, with its address.
    pub async fn sandbox(&self) -> Result<Sandbox, String> {
        let host = self.next_host.fetch_add(1, Ordering::Relaxed);
        if host > 254 {
            return Err("the node's pod range 10.244.0.0/24 is exhausted".into());
        }
        let address = Ipv4Addr::new(10, 244, 0, host as u8);
        let netns = unique("appdb-pod-");
        ip(&["netns", "add", &netns]).await?;
        let sandbox = Sandbox {
            netns: netns.clone(),
            address,
        };
        let peer = format!("veth{host}");
        let cidr = format!("{address}/24");
        let gateway = self.gateway.to_string();
        let node = self.netns.as_str();
        for args in [
            &["-n", &netns, "link", "set", "lo", "up"][..],
            &[
                "-n", node, "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
            &["-n", node, "link", "set", &peer, "master", Self::BRIDGE],
            &["-n", node, "link", "set", &peer, "up"],
            &["-n", &netns, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", &netns, "link", "set", "eth0", "up"],
            &["-n", &netns, "route", "add", "default", "via", &gateway],
        ] {
            ip(args).await?;
        }
        Ok(sandbox)
    }

    pub async fn stop(self) {
        let _ = ip(&["netns", "del", &self.netns]).await;
        std::mem::forget(self);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        delete_netns_now(&self.netns);
    }
}

/// The node's nftables table for load balancer addresses.
const LB_TABLE: &str = "appdb_lb";

async fn in_netns(netns: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .await
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} (in {netns}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Applies an nftables rule set (or one command) inside a namespace.
/// Deletes the connection-tracking entries in `netns` that translate UDP to `address:port` into `backend`, as
/// kube-proxy does when an endpoint leaves (needs `conntrack`; scripts/test.sh installs it). Nothing to delete is
/// not an error.
pub(crate) async fn forget_udp_translation(netns: &str, address: Ipv4Addr, port: u16, backend: Option<Ipv4Addr>) {
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", netns, "conntrack", "-D", "-p", "udp"])
        .args(["--orig-dst", &address.to_string(), "--dport", &port.to_string()]);
    if let Some(backend) = backend {
        command.args(["--dst-nat", &backend.to_string()]);
    }
    let result = command.output().await;
    match result {
        Err(e) => tracing::warn!(error = %e, "conntrack is needed to forget stale UDP translations"),
        Ok(out) if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("0 flow entries") => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr), "conntrack -D failed")
        }
        Ok(_) => {}
    }
}

pub(crate) async fn nft(netns: &str, rules: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(unique("appdb-nft-"));
    std::fs::write(&path, format!("{rules}\n")).map_err(|e| e.to_string())?;
    let result = in_netns(netns, &["nft", "-f", &path.display().to_string()]).await;
    let _ = std::fs::remove_file(&path);
    result
}

/// What `nft` prints for `command` in `netns`.
async fn nft_output(netns: &str, command: &str) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft"])
        .args(command.split_whitespace())
        .output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft {command}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// For `Drop`, which cannot wait on a task: removes a network namespace synchronously.
fn delete_netns_now(netns: &str) {
    let _ = std::process::Command::new("ip").args(["netns", "del", netns]).status();
}

/// A pod's network namespace.
pub struct Sandbox {
    pub netns: String,
    pub address: Ipv4Addr,
}

impl Sandbox {
    pub async fn remove(self) {
        let _ = ip(&["netns", "del", &self.netns]).await;
        std::mem::forget(self);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        delete_netns_now(&self.netns);
    }
}

/// How to start one container.
pub struct Launch<'a> {
    /// The network namespace: the pod's sandbox, or the node's own for `hostNetwork` pods.
    pub netns: &'a str,
    pub hostname: &'a str,
    /// The program and its arguments (already resolved from the image, `command` and `args`).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub privileges: Privileges,
    pub workdir: Option<&'a Path>,
    /// Volumes bound into the container's own mount namespace before it starts (never visible outside it).
    pub mounts: Vec<Mount>,
    /// The container's output (stdout and stderr), as `kubectl logs` shows it.
    pub log: PathBuf,
}

/// A running container.
pub struct Container {
    launcher: Child,
    /// Mount points on the machine this container holds (released, and removed by the last holder, on drop).
    mount_points: Vec<PathBuf>,
    pub log: PathBuf,
    /// What an `exec` into the container runs with (probes, `kubectl exec`).
    privileges: Privileges,
    env: Vec<(String, String)>,
}

/// The default `PATH` of the images in the table.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Container {
    pub fn start(launch: Launch<'_>) -> Result<Container, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log)
            .map_err(|e| format!("the container's log {}: {e}", launch.log.display()))?;
        if launch.privileges.read_only_root {
            // Never silently granted: the pod's log says what the runner does not enforce.
            use std::io::Write;
            let _ = writeln!(
                &log,
                "pod runner: readOnlyRootFilesystem is not enforced (the container runs on this machine's file system)"
            );
        }
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mount_points = claim_mount_points(&launch.mounts)?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", launch.netns])
            // PID 1 of a new PID namespace with its own /proc; its own hostname.
            .args([
                "unshare",
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--uts",
                "--kill-child",
            ])
            .args([
                "sh",
                "-c",
                &format!("hostname \"$0\" && {}exec \"$@\"", mount_script(&launch.mounts)),
                launch.hostname,
            ])
            .arg("setpriv")
            .args(setpriv_args(&launch.privileges))
            .arg("--")
            .args(&launch.argv)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true);
        if !launch.env.iter().any(|(k, _)| k == "PATH") {
            command.env("PATH", IMAGE_PATH);
        }
        command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        // The image's working directory is `/` unless `workingDir` says otherwise (never the test's own, which the
        // container's private /tmp may hide).
        command.current_dir(launch.workdir.unwrap_or(Path::new("/")));
        let launcher = match command.spawn() {
            Ok(l) => l,
            Err(e) => {
                release_mount_points(&mount_points);
                return Err(format!("starting the container: {e}"));
            }
        };
        let mut env = launch.env;
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), IMAGE_PATH.into()));
        }
        Ok(Container {
            launcher,
            mount_points,
            log: launch.log,
            privileges: launch.privileges,
            env,
        })
    }

    /// Runs `argv` inside the running container, as its probes and `kubectl exec` do: in its namespaces (mount,
    /// PID, network, UTS), as its user, with its capabilities and environment.
    pub async fn exec(&self, argv: &[String]) -> Result<std::process::Output, String> {
        let pid = self.pid1().ok_or("the container is not running")?;
        Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "-p", "-n", "-u", "--wd=/", "--"])
            .arg("setpriv")
            .args(setpriv_args(&self.privileges))
            .arg("--")
            .args(argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("nsenter: {e}"))
    }

    /// The container's PID 1, as the machine sees it (the child of `unshare`).
    pub fn pid1(&self) -> Option<u32> {
        let launcher = self.launcher.id()?;
        let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Waits up to `timeout` for PID 1 to exist (the namespaces are made first).
    pub async fn wait_for_pid1(&self, timeout: Duration) -> Option<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = self.pid1() {
                return Some(pid);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The exit code once PID 1 has exited (`128 + signal` when a signal ended it); `None` while it runs.
    pub fn try_exit_code(&mut self) -> Option<i32> {
        self.launcher.try_wait().ok().flatten().map(exit_code)
    }

    pub async fn wait(&mut self) -> i32 {
        self.launcher.wait().await.map(exit_code).unwrap_or(-1)
    }

    /// The kubelet's stop: SIGTERM to PID 1, `grace` to exit, then SIGKILL (the whole PID namespace goes with its
    /// PID 1). Returns the exit code and whether the grace period ran out.
    pub async fn stop(&mut self, grace: Duration) -> (i32, bool) {
        if let Some(code) = self.try_exit_code() {
            return (code, false);
        }
        if let Some(pid) = self.pid1() {
            signal(pid, "TERM");
        }
        match tokio::time::timeout(grace, self.launcher.wait()).await {
            Ok(status) => (status.map(exit_code).unwrap_or(-1), false),
            Err(_) => {
                if let Some(pid) = self.pid1() {
                    signal(pid, "KILL");
                }
                let _ = self.wait().await;
                // What the kubelet reports for a SIGKILLed container. (`unshare` 2.38 itself exits 1 when its child
                // dies of SIGKILL: it cannot re-raise that signal. Other signals come through as 128 + signal.)
                (128 + 9, true)
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // A container dropped while it runs (a test that failed, a pod never stopped) is killed through its PID 1,
        // which takes its whole PID namespace along, instead of relying on the launcher's death alone: `unshare
        // --kill-child` arms a parent-death signal that the kernel clears when PID 1 changes its user (setpriv to
        // the pod's runAsUser). MySQL pods of failed end-to-end runs were seen outliving their test (uid 999, PID 1
        // of their own namespace, reparented to init).
        if self.launcher.id().is_some()
            && self.try_exit_code().is_none()
            && let Some(pid) = self.pid1()
        {
            signal(pid, "KILL");
        }
        // The mount namespace goes with its last process; a mount point another container still holds stays.
        release_mount_points(&self.mount_points);
    }
}

/// Mount points the runner made on this machine, with the number of containers holding each. A runtime makes
/// mount points inside the image's root file system; the runner's containers share the machine's, so what it
/// makes there it removes again once no container of this process uses it.
static MADE_MOUNT_POINTS: std::sync::Mutex<std::collections::BTreeMap<PathBuf, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Makes the missing mount points of `mounts` on the machine (folders; an empty file for a file source) and
/// returns every made path this container now holds. Targets under another mount's target are left to the mount
/// script: they are made inside that volume, not on the machine.
pub fn claim_mount_points(mounts: &[Mount]) -> Result<Vec<PathBuf>, String> {
    let mut made = MADE_MOUNT_POINTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = Vec::new();
    for m in mounts {
        let target = Path::new(&m.target);
        let nested = mounts
            .iter()
            .any(|other| other.target != m.target && target.starts_with(&other.target));
        if nested || !target.is_absolute() {
            continue;
        }
        let mut path = PathBuf::from("/");
        let components: Vec<_> = target.components().skip(1).collect();
        for (i, component) in components.iter().enumerate() {
            path.push(component);
            let last = i + 1 == components.len();
            if let Some(count) = made.get_mut(&path) {
                *count += 1;
                held.push(path.clone());
                continue;
            }
            if path.symlink_metadata().is_ok() {
                continue;
            }
            let result = if last && !m.source.is_dir() {
                std::fs::File::create(&path).map(drop)
            } else {
                std::fs::create_dir(&path)
            };
            if let Err(e) = result {
                drop(made);
                release_mount_points(&held);
                return Err(format!("the mount point {}: {e}", path.display()));
            }
            made.insert(path.clone(), 1);
            held.push(path.clone());
        }
    }
    Ok(held)
}

/// Gives up `held` mount points; the last holder removes them, deepest first, if they are still empty.
pub fn release_mount_points(held: &[PathBuf]) {
    let mut made = MADE_MOUNT_POINTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut ordered: Vec<&PathBuf> = held.iter().collect();
    ordered.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in ordered {
        let Some(count) = made.get_mut(path) else { continue };
        *count -= 1;
        if *count == 0 {
            made.remove(path);
            let _ = if path.is_dir() {
                std::fs::remove_dir(path)
            } else if path.metadata().is_ok_and(|m| m.len() == 0) {
                std::fs::remove_file(path)
            } else {
                Ok(())
            };
        }
    }
}

/// Quotes a word for `sh`.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The shell steps that bind each volume at its path (creating the mount point: a folder for a folder, a file for
/// a file), read-only where the mount says so. They run as root in the container's new mount namespace, before
/// its privileges are dropped, so nothing is mounted on the machine itself. Mount points that did not exist on the
/// machine were made by [`claim_mount_points`] before, and are removed when no container holds them any more.
pub fn mount_script(mounts: &[Mount]) -> String {
    // Every source is first bound under a private staging tmpfs, before any target is mounted: a volume on /tmp
    // must not hide a source that lies under this machine's /tmp (a runtime resolves sources on the host).
    let stage = "/opt/appdb-image/.stage";
    let mut script = format!("mkdir -p {stage} && mount -t tmpfs -o mode=0755 tmpfs {stage} && ");
    for (i, m) in mounts.iter().enumerate() {
        let source = quote(&m.source.display().to_string());
        script.push_str(&format!(
            "{{ if [ -d {source} ]; then mkdir {stage}/{i}; else touch {stage}/{i}; fi; }} && mount --bind {source} {stage}/{i} && "
        ));
    }
    // An image has a /tmp of its own: unless a volume is mounted there, the container gets an empty one, so
    // nothing a container writes to /tmp reaches the machine or another container.
    if !mounts
        .iter()
        .any(|m| m.target == "/tmp" || m.target.starts_with("/tmp/"))
    {
        script.push_str("mount -t tmpfs -o mode=1777,size=256m tmpfs /tmp && ");
    }
    // Parents before children, as containerd orders mounts (by the number of components of the destination): a
    // volume on /run must not hide the service account's token under /var/run/secrets (/var/run is /run).
    let mut ordered: Vec<(usize, &Mount)> = mounts.iter().enumerate().collect();
    ordered.sort_by_key(|(_, m)| m.target.split('/').filter(|c| !c.is_empty()).count());
    for (i, m) in ordered {
        let (staged, target) = (format!("{stage}/{i}"), quote(&m.target));
        let point = format!(
            "if [ -d {staged} ]; then mkdir -p {target}; elif [ ! -e {target} ]; then mkdir -p \"$(dirname {target})\" && touch {target}; fi"
        );
        let read_only = if m.read_only {
            format!(" && mount -o remount,bind,ro {target}")
        } else {
            String::new()
        };
        script.push_str(&format!(
            "{{ {point}; }} && mount --bind {staged} {target}{read_only} && "
        ));
    }
    script
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}
