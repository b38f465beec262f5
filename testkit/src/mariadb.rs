//! A private, throw-away MariaDB server on loopback for tests that need a real one.
//! Fails loudly when MariaDB is not installed (`scripts/test.sh` installs it).

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

pub struct MariaDb {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket: PathBuf,
}

fn require(binary: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(binary).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{binary} is required for this test: install mariadb-server (scripts/test.sh does)"
    );
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on a free loopback port. `root_password` is set for
    /// `root@localhost` and `root@'%'`, and the anonymous users are removed, as the official image's entrypoint does.
    pub async fn start(root_password: &str) -> MariaDb {
        Self::start_in(None, "127.0.0.1", root_password).await
    }

    /// Like [`MariaDb::start`], inside network namespace `netns` (when given), listening on `bind`.
    pub async fn start_in(netns: Option<&str>, bind: &str, root_password: &str) -> MariaDb {
        Self::start_full(netns, bind, root_password, 1, &[]).await
    }

    /// A server with its own `server_id`, GTID strict mode and `log_slave_updates`, configured as the operator
    /// configures database pods: what replication between two servers needs.
    pub async fn start_numbered(root_password: &str, server_id: u32) -> MariaDb {
        Self::start_full(None, "127.0.0.1", root_password, server_id, &[]).await
    }

    /// Like [`MariaDb::start_numbered`] with extra server options (buffer pool size and the like).
    pub async fn start_tuned(root_password: &str, server_id: u32, options: &[&str]) -> MariaDb {
        Self::start_full(None, "127.0.0.1", root_password, server_id, options).await
    }

    async fn start_full(
        netns: Option<&str>,
        bind: &str,
        root_password: &str,
        server_id: u32,
        options: &[&str],
    ) -> MariaDb {
        for b in ["mariadb-install-db", "mariadbd", "mariadb"] {
            require(b);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let socket = dir.path().join("mysqld.sock");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                "--user=root",
                "--skip-test-db",
                // A private temporary directory: installs running side by side collide in /tmp.
                &format!("--tmpdir={}", dir.path().display()),
            ])
            .output()
            .await
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "mariadbd"]);
                c
            }
            None => Command::new("mariadbd"),
        };
        let child = command
            .args([
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                &format!("--port={port}"),
                &format!("--socket={}", socket.display()),
                &format!("--bind-address={bind}"),
                "--skip-name-resolve",
                "--user=root",
                "--log-bin=binlog",
                "--binlog-format=ROW",
                &format!("--server-id={server_id}"),
                "--log-slave-updates",
                "--gtid-strict-mode=ON",
                &format!("--tmpdir={}", dir.path().display()),
                &format!("--pid-file={}", dir.path().join("mysqld.pid").display()),
            ])
            .args(options)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start mariadbd");
        let server = MariaDb {
            child,
            dir,
            port,
            socket,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while server.sql_as_os_root("SELECT 1").await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mariadbd did not accept connections on its socket within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let setup = format!(
            "DELETE FROM mysql.global_priv WHERE User = '';\
             FLUSH PRIVILEGES;\
             ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('{root_password}');\
             CREATE USER 'root'@'%' IDENTIFIED BY '{root_password}';\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        );
        server.sql_as_os_root(&setup).await.expect("set the root password");
        server
    }

    /// Runs SQL over the socket as the operating system's root user (unix_socket authentication).
    pub async fn sql_as_os_root(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                &format!("--socket={}", self.socket.display()),
                "-uroot",
                "-N",
                "-e",
                sql,
            ])
            .output()
            .await
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn opts(&self, user: &str, password: &str) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .into()
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
