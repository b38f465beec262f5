//! The tunnel state a gateway reports: read from charon over vici (`list-sas`, and `log` events for the reason of
//! a failure), written only when it changes.

use std::collections::HashMap;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// What a gateway reports about its tunnel (the `appdb.dev/tunnel-state` annotation's JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `UP` or `DOWN`.
    pub state: String,
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
            ("UP", "IKE SA established, CHILD SA installed".to_owned())
        } else {
            (
                "DOWN",
                reason
                    .unwrap_or("waiting for the customer's device to connect")
                    .to_owned(),
            )
        };
        if last.as_ref().is_none_or(|l| l.state != state || l.message != message) {
            let changed = Report {
                state: state.into(),
                since: jiff::Timestamp::now().to_string(),
                message,
            };
            report(&changed);
            last = Some(changed);
        }
    }
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
}
