//! `pods/{name}/portforward` over WebSocket (`v5.channel.k8s.io` / `v4.channel.k8s.io`), as kube-rs and kubectl
//! speak it: each port has a data channel (2n) and an error channel (2n+1); the server first sends every channel's
//! port number (little-endian), then data frames prefixed with their channel. A test maps a pod to a local address
//! (a real server standing in for the pod) and can cut every open forward to exercise reconnection.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{
        Path, Query, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ServerState;

/// Connects to `port` of pod (namespace, name).
pub type Dialer = Arc<
    dyn Fn(String, String, u16) -> futures::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>>
        + Send
        + Sync,
>;

/// Where a pod's port-forward leads.
#[derive(Clone)]
pub enum Target {
    /// A local server standing in for the pod (whatever port is asked).
    Address(SocketAddr),
    /// Dialled per port.
    Dial(Dialer),
}

#[derive(serde::Deserialize)]
pub struct Ports {
    ports: Option<String>,
}

/// A failed request's `Status` body, as a real API server answers it.
pub(crate) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub async fn handle(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(ports): Query<Ports>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    state.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = super::http::authorize_pod_subresource(&state, &headers, &method, &namespace, &pod, "portforward") {
        return e.into_response();
    }
    let target = state
        .port_forwards
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(namespace.clone(), pod.clone()))
        .cloned()
        .or_else(|| {
            state
                .port_forward_dialer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .map(Target::Dial)
        });
    let Some(target) = target else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let port: u16 = match ports
        .ports
        .as_deref()
        .map(|p| p.split(',').map(str::parse::<u16>).collect::<Result<Vec<_>, _>>())
    {
        Some(Ok(p)) if p.len() == 1 => p[0],
        _ => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "exactly one port is supported by the test API server".into(),
            );
        }
    };
    let Ok(upgrade) = upgrade else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "a WebSocket upgrade is required".into(),
        );
    };
    let mut cut = state.forward_cut.subscribe();
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            cut.mark_unchanged();
            forward(socket, target, namespace, pod, port, &mut cut).await;
        })
}

async fn forward(
    mut socket: WebSocket,
    target: Target,
    namespace: String,
    pod: String,
    port: u16,
    cut: &mut tokio::sync::watch::Receiver<u64>,
) {
    let [lo, hi] = port.to_le_bytes();
    for ch in [0u8, 1] {
        if socket.send(Message::Binary(vec![ch, lo, hi].into())).await.is_err() {
            return;
        }
    }
    let connected = match target {
        Target::Address(addr) => tokio::net::TcpStream::connect(addr).await,
        Target::Dial(dial) => dial(namespace, pod, port).await,
    };
    let mut stream = match connected {
        Ok(s) => s,
        Err(e) => {
            let mut frame = vec![1u8];
            frame.extend(format!("error forwarding port {port}: {e}").into_bytes());
            let _ = socket.send(Message::Binary(frame.into())).await;
            let _ = socket.close().await;
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = cut.changed() => break,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(data))) if data.len() > 1 && data[0] == 0 => {
                    if stream.write_all(&data[1..]).await.is_err() {
                        break;
                    }
                }
                // v5 close signals (channel 255) and other channels carry nothing to relay.
                Some(Ok(Message::Binary(_))) | Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) | Some(Ok(Message::Text(_))) => {}
                _ => break,
            },
        }
    }
    let _ = socket.close().await;
}
