//! Administration statements the operator runs in a customer's server (as a Job: `appdb-operator rotate-password`).

use mysql_async::{OptsBuilder, prelude::Queryable};

use super::password::{PasswordError, validate_admin_password};

/// Why a rotation failed. Messages never contain a password.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the new password is refused: {0}")]
    Password(#[from] PasswordError),
    #[error("the username {0:?} is not a valid administrator name")]
    Username(String),
    #[error("cannot connect to {host}:{port} as root: {source}")]
    Connect {
        host: String,
        port: u16,
        source: mysql_async::Error,
    },
    #[error("the server refused the password change: {0}")]
    Statement(mysql_async::Error),
}

/// Where and what to rotate. Built from the environment by the CLI, never from the command line.
pub struct RotateRequest {
    pub host: String,
    pub port: u16,
    pub root_password: String,
    pub username: String,
    pub new_password: String,
}

impl std::fmt::Debug for RotateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotateRequest")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A string literal for MySQL and MariaDB with backslash escapes enabled (the session disables
/// `NO_BACKSLASH_ESCAPES` first): `\` doubled, `'` doubled.
pub fn quote_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sets the administrator's password in the running server (`ALTER USER`). Idempotent.
pub async fn rotate_admin_password(req: &RotateRequest) -> Result<(), RotateError> {
    validate_admin_password(&req.new_password)?;
    if !valid_username(&req.username) {
        return Err(RotateError::Username(req.username.clone()));
    }
    let opts = OptsBuilder::default()
        .ip_or_hostname(req.host.clone())
        .tcp_port(req.port)
        .user(Some("root"))
        .pass(Some(req.root_password.clone()))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|source| RotateError::Connect {
            host: req.host.clone(),
            port: req.port,
            source,
        })?;
    conn.query_drop("SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
        .await
        .map_err(RotateError::Statement)?;
    let statement = format!(
        "ALTER USER '{}'@'%' IDENTIFIED BY {}",
        req.username,
        quote_literal(&req.new_password)
    );
    conn.query_drop(statement).await.map_err(RotateError::Statement)?;
    let _ = conn.disconnect().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"'a\\b'");
        assert_eq!(quote_literal(r"\'"), r"'\\'''");
    }

    #[test]
    fn usernames() {
        assert!(valid_username("acme_admin"));
        assert!(!valid_username("x'; DROP USER root; --"));
        assert!(!valid_username("1abc"));
    }

    #[test]
    fn debug_never_shows_passwords() {
        let req = RotateRequest {
            host: "h".into(),
            port: 1,
            root_password: "rootsecret".into(),
            username: "u".into(),
            new_password: "newsecret1".into(),
        };
        let shown = format!("{req:?}");
        assert!(
            !shown.contains("rootsecret") && !shown.contains("newsecret1"),
            "{shown}"
        );
    }
}
