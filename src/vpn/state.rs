//! The tunnel state a gateway reports: read from charon over vici (`list-sas`, and `log` events for the reason of
//! a failure), written only when it changes.

use std::collections::HashMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::api::vpn_connection::TunnelState;

/// What a gateway reports about its tunnel (JSON, under its pod's key of the connection's report ConfigMap): the
/// agent in the gateway pod writes it, the VpnConnection controller reads it. This is the one definition of both
/// sides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `UP` or `DOWN` (the agent never reports `UNKNOWN`: that is the operator's word for a report it cannot trust).
    pub state: TunnelState,
    /// When the state last changed (RFC 3339).
    pub since: String,
    /// Why, in a few words.
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct IkeSa {
    state: String,
    #[serde(rename = "child-sas", default)]
    child_sas: HashMap<String, ChildSa>,
}

#[derive(Debug, Deserialize)]
struct ChildSa {
    state: String,
}

#[derive(Debug, Deserialize)]
struct LogLine {
    #[serde(default)]
    msg: String,
}

/// Turns a charon log line into the reason a tunnel is down, when it says one.
pub fn failure_reason(log: &str) -> Option<&'static str> {
    if log.contains("AUTHENTICATION_FAILED")
        || log.contains("MAC mismatched")
        || log.contains("authentication of") && log.contains("failed")
    {
        Some("authentication failed: the pre-shared keys differ")
    } else if log.contains("NO_PROPOSAL_CHOSEN") || log.contains("no acceptable proposal") {
        Some("no proposal chosen: the two sides share no algorithm")
    } else if log.contains("TS_UNACCEPTABLE") {
        Some("traffic selectors unacceptable: the networks configured on the two sides differ")
    } else if log.contains("no IKE config found") || log.contains("no matching peer config") {
        Some("the peer is not the configured customer gateway")
    } else if log.contains("giving up after") && log.contains("retransmits") {
        Some("the peer stopped answering (dead peer detection)")
    } else {
        None
    }
}

/// UP when an IKE SA is established with an installed CHILD_SA.
fn tunnel_up(sas: &[HashMap<String, IkeSa>]) -> bool {
    sas.iter()
        .flat_map(|m| m.values())
        .any(|ike| ike.state == "ESTABLISHED" && ike.child_sas.values().any(|c| c.state == "INSTALLED"))
}

/// Follows charon at `vici_socket` and calls `report` with every change of state, until the socket goes away.
pub async fn watch(
    vici_socket: &str,
    interval: std::time::Duration,
    mut report: impl FnMut(&Report),
) -> Result<(), rsvici::Error> {
    let mut client = rsvici::unix::connect(vici_socket).await?;
    // A second connection for the log events; it must live as long as its stream.
    let mut log_client = rsvici::unix::connect(vici_socket).await?;
    let mut logs = Box::pin(log_client.subscribe::<LogLine>("log").map(|l| l.ok()));
    let mut last: Option<Report> = None;
    let mut reason: Option<&'static str> = None;
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            line = logs.next() => {
                if let Some(Some(line)) = line
                    && let Some(r) = failure_reason(&line.msg)
                {
                    reason = Some(r);
                }
                continue;
            }
            _ = ticker.tick() => {}
        }
        let sas: Vec<HashMap<String, IkeSa>> = {
            let stream = client.stream_request::<(), HashMap<String, IkeSa>>("list-sas", "list-sa", ());
            futures::pin_mut!(stream);
            let mut all = Vec::new();
            while let Some(item) = stream.next().await {
                all.push(item?);
            }
            all
        };
        let up = tunnel_up(&sas);
        let (state, message) = if up {
            reason = None;
            (TunnelState::Up, "IKE SA established, CHILD SA installed".to_owned())
        } else {
            (
                TunnelState::Down,
                reason
                    .unwrap_or("waiting for the customer's device to connect")
                    .to_owned(),
            )
        };
        if last.as_ref().is_none_or(|l| l.state != state || l.message != message) {
            let changed = Report {
                state,
                since: jiff::Timestamp::now().to_string(),
                message,
            };
            report(&changed);
            last = Some(changed);
        }
    }
}

/// How often the agent checks that the state on record is charon's.
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(20);

/// Where the agent keeps the tunnel's state on record.
pub struct Record {
    pub file: Option<std::path::PathBuf>,
    /// The connection's report ConfigMap, under this pod's key (`crate::report`).
    pub reporter: Option<crate::report::Reporter>,
    /// Touched whenever the record is known to hold the current state: the readiness probe's evidence.
    pub ready_file: Option<std::path::PathBuf>,
}

impl Record {
    /// Writes `report` wherever it is kept; true when every write succeeded.
    async fn write(&self, report: &Report) -> bool {
        let json = serde_json::to_string(report).unwrap_or_default();
        let mut ok = true;
        if let Some(path) = &self.file {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, &json)
                .and_then(|_| std::fs::rename(&tmp, path))
                .is_err()
            {
                tracing::warn!(path = %path.display(), "cannot write the state report");
                ok = false;
            }
        }
        if let Some(reporter) = &self.reporter
            && let Err(e) = reporter.write(&json).await
        {
            tracing::warn!(error = %e, "cannot write the state report");
            ok = false;
        }
        ok
    }

    /// Reads the report on record back: this pod's key of the report ConfigMap (else the file). `Err` when it
    /// cannot be read.
    async fn on_record(&self) -> Result<Option<Report>, String> {
        if let Some(reporter) = &self.reporter {
            let live = reporter.read().await.map_err(|e| e.to_string())?;
            return Ok(live.and_then(|a| serde_json::from_str(&a).ok()));
        }
        if let Some(path) = &self.file {
            return Ok(std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()));
        }
        Ok(None)
    }

    fn touch_ready(&self) {
        if let Some(path) = &self.ready_file
            && std::fs::write(path, jiff::Timestamp::now().to_string()).is_err()
        {
            tracing::warn!(path = %path.display(), "cannot touch the ready file");
        }
    }
}

/// Follows charon forever (reconnecting when its socket goes away) and keeps `record` equal to charon's state:
/// every change is written at once, and every [`RECHECK`] the record is read back and rewritten if it differs
/// (a lost or overwritten report). The ready file is touched only while the record is known to be right, so
/// the agent's readiness says whether the reported state can be trusted.
pub async fn report_forever(socket: String, record: Record) -> std::io::Result<()> {
    loop {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = watch(&socket, std::time::Duration::from_secs(2), move |r| {
            let _ = tx.send(r.clone());
        });
        let reporter = async {
            let mut last: Option<Report> = None;
            let mut recheck = tokio::time::interval(RECHECK);
            loop {
                tokio::select! {
                    report = rx.recv() => {
                        let Some(report) = report else { return };
                        tracing::info!(state = %report.state, message = %report.message, "tunnel state");
                        if record.write(&report).await {
                            record.touch_ready();
                        }
                        last = Some(report);
                    }
                    _ = recheck.tick() => {
                        let Some(current) = &last else { continue };
                        match record.on_record().await {
                            Ok(Some(r)) if &r == current => record.touch_ready(),
                            Ok(_) => {
                                if record.write(current).await {
                                    record.touch_ready();
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "cannot read the state on record"),
                        }
                    }
                }
            }
        };
        let (result, ()) = tokio::join!(watcher, reporter);
        if let Err(e) = result {
            tracing::warn!(error = %e, "lost charon's vici socket; reconnecting");
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The readiness check: `file` was touched within `max_age`.
pub fn fresh(file: &std::path::Path, max_age: std::time::Duration) -> Result<(), String> {
    let modified = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let age = modified.elapsed().unwrap_or_default();
    if age > max_age {
        return Err(format!(
            "the tunnel state was last confirmed {} s ago (more than {} s)",
            age.as_secs(),
            max_age.as_secs()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_from_charon_logs() {
        assert_eq!(
            failure_reason("received AUTHENTICATION_FAILED notify error"),
            Some("authentication failed: the pre-shared keys differ")
        );
        assert_eq!(
            failure_reason("tried 1 shared key for 'a' - 'b', but MAC mismatched"),
            Some("authentication failed: the pre-shared keys differ")
        );
        assert!(
            failure_reason("received NO_PROPOSAL_CHOSEN notify error")
                .unwrap()
                .contains("no proposal")
        );
        assert_eq!(failure_reason("sending DPD request"), None);
    }

    #[test]
    fn freshness_of_the_ready_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ready");
        assert!(
            fresh(&file, std::time::Duration::from_secs(90)).is_err(),
            "never touched"
        );
        std::fs::write(&file, "now").unwrap();
        assert_eq!(fresh(&file, std::time::Duration::from_secs(90)), Ok(()));
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let stale = fresh(&file, std::time::Duration::from_secs(90)).unwrap_err();
        assert!(stale.contains("more than 90 s"), "{stale}");
    }
}
