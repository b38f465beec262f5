//! A test cluster whose kubelet runs pods for real (testkit::pods::kubelet), for the end-to-end tests on the pod
//! runner: the test API server with kubectl, a node, the cluster's DNS and API access, and port-forwards into
//! pods. Everything stops (every pod with it) when it is dropped; on failure, every container's log is shown.

use std::sync::Arc;

use appdb_testkit::pods::{kubelet::PodKubelet, pod::Programs};
use tokio_util::sync::CancellationToken;

use super::support::Cluster;

/// A cluster whose kubelet runs pods for real, stopped (every pod with it) when dropped.
pub struct RealCluster {
    pub c: Cluster,
    pub kubelet: Arc<PodKubelet>,
    stop: CancellationToken,
    done: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl RealCluster {
    pub async fn start() -> RealCluster {
        let c = Cluster::start().await;
        let client = kube::Client::try_from(c.server.admin_config()).expect("client");
        let dir = tempfile::tempdir().expect("temp dir");
        let kubelet = PodKubelet::start(
            client,
            Programs {
                operator: env!("CARGO_BIN_EXE_appdb-operator").into(),
            },
            dir.path().to_owned(),
            c.server.addr(),
            c.server.ca_der(),
        )
        .await
        .expect("the node");
        c.server.dial_port_forwards(kubelet.port_forward_dialer());
        c.server.read_logs_with(kubelet.log_reader());
        let stop = CancellationToken::new();
        let done = Some(tokio::spawn(kubelet.clone().run(stop.clone())));
        RealCluster {
            c,
            kubelet,
            stop,
            done,
            dir,
        }
    }

    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    pub async fn jsonpath(&self, ns: &str, what: &str, path: &str) -> String {
        let out = self
            .c
            .kubectl(&["get", what, "-n", ns, "-o", &format!("jsonpath={path}")])
            .await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RealCluster {
    /// On failure, every container's log: the reason is in them.
    fn drop(&mut self) {
        self.stop.cancel();
        if !std::thread::panicking() {
            return;
        }
        let pods = self.dir.path().join("pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            for log in std::fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                if log.path().extension().is_some_and(|x| x == "log") {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    eprintln!(
                        "---- {} ----\n{}",
                        log.path().display(),
                        lines[lines.len().saturating_sub(40)..].join("\n")
                    );
                }
            }
        }
    }
}
