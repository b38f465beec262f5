//! `pods/{name}/log`, as `kubectl logs` reads it: the container's output from whoever runs the pod (the pod
//! runner's kubelet registers a [`LogReader`]). Supported: `container`, `tailLines`, `previous` (refused: the
//! runner keeps one log per container, restarts appended). `follow` answers with what exists so far and ends.

use std::sync::Arc;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{ServerState, portforward::status};

/// Why a log cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// No such pod (or it never ran here).
    NotFound(String),
    /// The request is not answerable as asked (no container named and several exist, say).
    BadRequest(String),
}

/// Reads the log of (namespace, pod, container or `None` for "the only one").
pub type LogReader = Arc<dyn Fn(&str, &str, Option<&str>) -> Result<String, LogError> + Send + Sync>;

#[derive(serde::Deserialize)]
pub struct LogQuery {
    container: Option<String>,
    #[serde(rename = "tailLines")]
    tail_lines: Option<usize>,
    previous: Option<bool>,
}

/// The last `n` lines of `text` (all of it when `n` is `None`).
pub fn tail(text: &str, n: Option<usize>) -> String {
    let Some(n) = n else { return text.to_owned() };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

pub async fn handle(
    State(state): State<Arc<ServerState>>,
    Path((namespace, pod)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
) -> Response {
    state.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = super::http::authorize_pod_subresource(&state, &headers, &method, &namespace, &pod, "log") {
        return e.into_response();
    }
    if query.previous == Some(true) {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "previous terminated container logs are not kept apart by the pod runner: restarts are appended".into(),
        );
    }
    let reader = state.log_reader.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(reader) = reader else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{pod}\" has no running containers here"),
        );
    };
    match reader(&namespace, &pod, query.container.as_deref()) {
        Ok(text) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            tail(&text, query.tail_lines),
        )
            .into_response(),
        Err(LogError::NotFound(m)) => status(StatusCode::NOT_FOUND, "NotFound", m),
        Err(LogError::BadRequest(m)) => status(StatusCode::BAD_REQUEST, "BadRequest", m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", Some(2)), "b\nc\n");
        assert_eq!(tail("a\nb\nc\n", None), "a\nb\nc\n");
        assert_eq!(tail("a\n", Some(5)), "a\n");
        assert_eq!(tail("", Some(1)), "");
    }
}
