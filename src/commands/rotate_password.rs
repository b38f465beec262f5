//! `appdb-operator rotate-password`: what the password rotation Job runs. Credentials come from the environment
//! only (never arguments, which `ps` and the pod spec show); one JSON line says how it went.

use std::process::ExitCode;

use crate::mysql::admin::{RotateRequest, rotate_admin_password};

fn request_from_env() -> Result<RotateRequest, String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    Ok(RotateRequest {
        host: var("APPDB_HOST")?,
        port: std::env::var("APPDB_PORT")
            .ok()
            .map(|p| p.parse().map_err(|_| "APPDB_PORT is not a port number".to_owned()))
            .transpose()?
            .unwrap_or(crate::mysql::PORT),
        root_password: var("APPDB_ROOT_PASSWORD")?,
        username: var("APPDB_ADMIN_USERNAME")?,
        new_password: var("APPDB_ADMIN_PASSWORD")?,
    })
}

pub async fn run() -> ExitCode {
    let started = jiff::Timestamp::now();
    let (result, user) = match request_from_env() {
        Ok(req) => (
            rotate_admin_password(&req).await.map_err(|e| e.to_string()),
            req.username.clone(),
        ),
        Err(e) => (Err(e), String::new()),
    };
    let line = serde_json::json!({
        "phase": "rotate-password",
        "user": user,
        "start": started.to_string(),
        "end": jiff::Timestamp::now().to_string(),
        "result": if result.is_ok() { "ok" } else { "error" },
        "message": result.as_ref().err(),
    });
    println!("{line}");
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
