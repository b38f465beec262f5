//! `pods/{name}/portforward` over WebSocket (`v5.channel.k8s.io` / `v4.channel.k8s.io`), as kube-rs and kubectl
//! speak it: each port has a data channel (2n) and an error channel (2n+1); the server first sends every channel's
//! port number (little-endian), then data frames prefixed with their channel. A test maps a pod to a local address
//! (a real server standing in for the pod) and can cut every open forward to exercise reconnection.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{
        FromRequestParts, Path, Query, State,
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
    /// A pod that exists with nothing mapped to it: the forward opens and each connection is refused, as a kubelet
    /// answers when nothing listens on the port.
    NothingListens,
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

/// The subprotocol kubectl (since 1.31) asks for when it tunnels SPDY through a WebSocket.
const SPDY_OVER_WEBSOCKET: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward protocol named in SPDY upgrades (`X-Stream-Protocol-Version`).
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

pub async fn handle(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(ports): Query<Ports>,
    request: axum::extract::Request,
) -> Response {
    state.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (mut parts, _body) = request.into_parts();
    let headers = parts.headers.clone();
    if let Err(e) =
        super::http::authorize_pod_subresource(&state, &headers, &parts.method, &namespace, &pod, "portforward")
    {
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
    let pod_exists = || {
        let store = state.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .objects
            .get(&(String::new(), "pods".to_owned()))
            .is_some_and(|pods| pods.contains_key(&(namespace.clone(), pod.clone())))
    };
    let Some(target) = target.or_else(|| pod_exists().then_some(Target::NothingListens)) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let mut cut = state.forward_cut.subscribe();
    let opened = |protocol: &str| {
        *state
            .forward_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(protocol.to_owned())
            .or_default() += 1;
    };
    let pod_ref = PodRef { target, namespace, pod };
    // kubectl port-forward: SPDY on the upgraded connection itself (its fallback when WebSockets are off or refused).
    if header_has(&headers, axum::http::header::UPGRADE, "spdy/3.1") {
        if !header_has(&headers, "x-stream-protocol-version", PORT_FORWARD_PROTOCOL) {
            return status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("unable to upgrade: no protocol in common (the server speaks {PORT_FORWARD_PROTOCOL})"),
            );
        }
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the connection cannot be upgraded".into(),
            );
        };
        opened("SPDY/3.1");
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                cut.mark_unchanged();
                spdy_session(hyper_util::rt::TokioIo::new(upgraded), pod_ref, &mut cut).await;
            }
        });
        return (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (axum::http::header::CONNECTION, "Upgrade"),
                (axum::http::header::UPGRADE, "SPDY/3.1"),
                (
                    axum::http::HeaderName::from_static("x-stream-protocol-version"),
                    PORT_FORWARD_PROTOCOL,
                ),
            ],
        )
            .into_response();
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(_) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "a WebSocket or SPDY/3.1 upgrade is required".into(),
            );
        }
    };
    // kubectl port-forward (since 1.31): SPDY frames inside WebSocket binary messages; ports come in stream headers.
    if header_has(
        &headers,
        axum::http::header::SEC_WEBSOCKET_PROTOCOL,
        SPDY_OVER_WEBSOCKET,
    ) {
        opened(SPDY_OVER_WEBSOCKET);
        return upgrade
            .protocols([SPDY_OVER_WEBSOCKET])
            .on_upgrade(move |socket| async move {
                cut.mark_unchanged();
                let (ours, theirs) = tokio::io::duplex(256 * 1024);
                tokio::join!(websocket_bytes(socket, theirs), spdy_session(ours, pod_ref, &mut cut));
            });
    }
    // kube-rs (`kubectl appdb tunnel`): the channel protocol, one port per request, named in the query.
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
                "exactly one port is supported by the test API server's channel protocol".into(),
            );
        }
    };
    opened("v4/v5.channel.k8s.io");
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| async move {
            cut.mark_unchanged();
            forward(socket, pod_ref, port, &mut cut).await;
        })
}

/// Whether a comma-separated header names `wanted` (case-insensitive), in any of its occurrences.
fn header_has(headers: &axum::http::HeaderMap, name: impl axum::http::header::AsHeaderName, wanted: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// The pod a forward leads to.
struct PodRef {
    target: Target,
    namespace: String,
    pod: String,
}

impl PodRef {
    fn connect(&self, port: u16) -> futures::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        match &self.target {
            Target::Address(addr) => Box::pin(tokio::net::TcpStream::connect(*addr)),
            Target::Dial(dial) => dial(self.namespace.clone(), self.pod.clone(), port),
            Target::NothingListens => Box::pin(std::future::ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("dial tcp4 127.0.0.1:{port}: connect: connection refused"),
            )))),
        }
    }
}

/// Carries a WebSocket's binary messages as a byte stream (`pipe` is the other end of the SPDY session's pipe),
/// as kubectl's tunnelling connection does: message boundaries mean nothing.
async fn websocket_bytes(socket: WebSocket, mut pipe: tokio::io::DuplexStream) {
    let (mut sink, mut messages) = futures::StreamExt::split(socket);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            read = pipe.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        return;
                    }
                }
            },
            message = futures::StreamExt::next(&mut messages) => match message {
                Some(Ok(Message::Binary(data))) => {
                    if pipe.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Text is not part of the tunnel; a close or an error ends it.
                _ => break,
            },
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

async fn forward(mut socket: WebSocket, pod: PodRef, port: u16, cut: &mut tokio::sync::watch::Receiver<u64>) {
    let [lo, hi] = port.to_le_bytes();
    for ch in [0u8, 1] {
        if socket.send(Message::Binary(vec![ch, lo, hi].into())).await.is_err() {
            return;
        }
    }
    let mut stream = match pod.connect(port).await {
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

/// What the client sent on a forwarded connection's data stream.
enum Input {
    Bytes(bytes::Bytes),
    /// The client will send nothing more (its local connection closed for writing).
    Fin,
}

/// A kubelet's side of kubectl's SPDY port-forward: each forwarded connection is a pair of client-initiated
/// streams, `error` and `data`, sharing a `requestid`, the pod's port in their headers. Every stream gets a reply;
/// the data stream carries the bytes both ways; the error stream carries a dial failure's message. Both end with a
/// FIN from this side when the pod's end closes, which is what kubectl waits for before it closes the local
/// connection.
async fn spdy_session<T>(io: T, pod: PodRef, cut: &mut tokio::sync::watch::Receiver<u64>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    use super::spdy::{Codec, FLAG_FIN, Frame, PROTOCOL_ERROR, header};
    let (mut reader, mut writer) = tokio::io::split(io);
    let (out, mut outgoing) = tokio::sync::mpsc::channel::<Frame>(64);
    // One writer: header blocks share one zlib stream, so frames are encoded in the order they are sent.
    let writing = tokio::spawn(async move {
        let mut codec = Codec::default();
        let mut wire = Vec::new();
        while let Some(frame) = outgoing.recv().await {
            wire.clear();
            codec.encode(&frame, &mut wire);
            while wire.len() < 256 * 1024 {
                let Ok(frame) = outgoing.try_recv() else { break };
                codec.encode(&frame, &mut wire);
            }
            if writer.write_all(&wire).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut codec = Codec::default();
    let mut buf = bytes::BytesMut::with_capacity(64 * 1024);
    // requestid → (error stream, (data stream, port)), until both halves have arrived.
    type Halves = (Option<u32>, Option<(u32, u16)>);
    let mut halves: std::collections::HashMap<String, Halves> = Default::default();
    let mut inputs: std::collections::HashMap<u32, tokio::sync::mpsc::Sender<Input>> = Default::default();
    let mut forwards = tokio::task::JoinSet::new();
    'session: loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pod = %pod.pod, "port-forward: {e}");
                    let _ = out
                        .send(Frame::GoAway {
                            last_stream_id: 0,
                            status: PROTOCOL_ERROR,
                        })
                        .await;
                    break 'session;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, .. } => {
                    let kind = header(&headers, "streamtype");
                    let port = header(&headers, "port").and_then(|p| p.parse::<u16>().ok());
                    let request = header(&headers, "requestid").map(str::to_owned);
                    let (Some(kind @ ("error" | "data")), Some(port), Some(request)) = (kind, port, request) else {
                        let _ = out
                            .send(Frame::RstStream {
                                stream_id,
                                status: PROTOCOL_ERROR,
                            })
                            .await;
                        continue;
                    };
                    let _ = out
                        .send(Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: vec![],
                        })
                        .await;
                    let pair = halves.entry(request.clone()).or_default();
                    if kind == "error" {
                        pair.0 = Some(stream_id);
                    } else {
                        pair.1 = Some((stream_id, port));
                    }
                    if let (Some(error_stream), Some((data_stream, port))) = *pair {
                        halves.remove(&request);
                        let (input, received) = tokio::sync::mpsc::channel(16);
                        inputs.insert(data_stream, input);
                        let connecting = pod.connect(port);
                        let out = out.clone();
                        let name = pod.pod.clone();
                        forwards.spawn(async move {
                            let fin = |stream_id| Frame::Data {
                                stream_id,
                                flags: FLAG_FIN,
                                data: Default::default(),
                            };
                            match connecting.await {
                                Ok(stream) => relay(stream, data_stream, received, &out).await,
                                Err(e) => {
                                    let message = format!("error forwarding port {port} to pod {name}: {e}");
                                    let _ = out
                                        .send(Frame::Data {
                                            stream_id: error_stream,
                                            flags: FLAG_FIN,
                                            data: message.into(),
                                        })
                                        .await;
                                }
                            }
                            let _ = out.send(fin(data_stream)).await;
                            let _ = out.send(fin(error_stream)).await;
                        });
                    }
                }
                Frame::Data { stream_id, flags, data } => {
                    if let Some(input) = inputs.get(&stream_id) {
                        let delivered = data.is_empty() || input.send(Input::Bytes(data)).await.is_ok();
                        if (!delivered || flags & FLAG_FIN != 0)
                            && let Some(input) = inputs.remove(&stream_id)
                        {
                            let _ = input.send(Input::Fin).await;
                        }
                    }
                }
                // Dropping the input ends that forward without a FIN: the client gave the stream up.
                Frame::RstStream { stream_id, .. } => {
                    inputs.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = out.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'session,
                Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Ignored { .. } => {}
            }
        }
        tokio::select! {
            _ = cut.changed() => {
                writing.abort();
                return;
            }
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break 'session,
                Ok(_) => {}
            },
        }
    }
    forwards.shutdown().await;
    drop(out);
    let _ = writing.await;
}

/// Copies between the pod's port and a data stream until the pod's end closes (or the stream is reset). A FIN from
/// the client half-closes the pod connection, so the pod still answers what it was sent.
async fn relay(
    stream: tokio::net::TcpStream,
    data_stream: u32,
    mut received: tokio::sync::mpsc::Receiver<Input>,
    out: &tokio::sync::mpsc::Sender<super::spdy::Frame>,
) {
    let (mut from_pod, mut to_pod) = stream.into_split();
    let mut buf = vec![0u8; 32 * 1024];
    let mut client_done = false;
    loop {
        tokio::select! {
            read = from_pod.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if out.send(super::spdy::Frame::Data { stream_id: data_stream, flags: 0, data }).await.is_err() {
                        return;
                    }
                }
            },
            input = received.recv(), if !client_done => match input {
                Some(Input::Bytes(data)) => {
                    if to_pod.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Some(Input::Fin) => {
                    client_done = true;
                    let _ = to_pod.shutdown().await;
                }
                None => return,
            },
        }
    }
}
