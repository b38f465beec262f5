//! A private, throw-away database server on loopback for tests that need a real one: Oracle MySQL (the default
//! engine of the operator) or MariaDB. Fails loudly when the engine is not installed: `scripts/test.sh` installs
//! both (MySQL with `scripts/install-mysql.sh` into `APPDB_MYSQL_ROOT`, default `/opt/appdb-mysql`).
//!
//! Initialising a data folder takes MySQL 5–12 s, so each engine's freshly initialised folder is kept once per
//! version (in the system's temporary folder, `appdb-testkit-templates/`) and copied for every server; a copy gets
//! its own server UUID.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::process::{Child, Command};

/// Which server a test runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// Oracle MySQL (9.x from Debian's unstable suite here; the operator's default image is MySQL 8.4).
    MySql,
    MariaDb,
}

impl Engine {
    /// Both, MySQL first: every real-server test runs on each.
    pub const ALL: [Engine; 2] = [Engine::MySql, Engine::MariaDb];

    pub fn name(self) -> &'static str {
        match self {
            Engine::MySql => "mysql",
            Engine::MariaDb => "mariadb",
        }
    }

    /// The folder holding the engine's programs, or `None` when they are on `PATH`.
    fn bin_dir(self) -> Option<PathBuf> {
        match self {
            Engine::MySql => Some(mysql_root().join("bin")),
            Engine::MariaDb => None,
        }
    }

    fn program(self, name: &str) -> PathBuf {
        match self.bin_dir() {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The server program (`mysqld` / `mariadbd`).
    pub fn server(self) -> PathBuf {
        self.program(match self {
            Engine::MySql => "mysqld",
            Engine::MariaDb => "mariadbd",
        })
    }

    /// The command-line client (`mysql` / `mariadb`), as the engine's official image ships it.
    pub fn client(self) -> PathBuf {
        self.program(match self {
            Engine::MySql => "mysql",
            Engine::MariaDb => "mariadb",
        })
    }

    /// The logical dump program (`mysqldump` / `mariadb-dump`).
    pub fn dump(self) -> PathBuf {
        self.program(match self {
            Engine::MySql => "mysqldump",
            Engine::MariaDb => "mariadb-dump",
        })
    }

    /// A `PATH` with the engine's programs first, for scripts that call the client by its bare name.
    pub fn path_env(self) -> std::ffi::OsString {
        let mut paths: Vec<PathBuf> = self.bin_dir().into_iter().collect();
        if let Some(path) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&path));
        }
        std::env::join_paths(paths).expect("PATH")
    }

    /// Panics with what to install when the engine's programs are missing (tests fail loudly, never skip).
    pub fn require(self) {
        let programs: &[&str] = match self {
            Engine::MySql => &["mysqld", "mysql"],
            Engine::MariaDb => &["mariadb-install-db", "mariadbd", "mariadb"],
        };
        for p in programs {
            let found = match self.bin_dir() {
                Some(dir) => dir.join(p).is_file(),
                None => std::env::var_os("PATH")
                    .map(|paths| std::env::split_paths(&paths).any(|d| d.join(p).is_file()))
                    .unwrap_or(false),
            };
            assert!(
                found,
                "{p} is required for this test: {}",
                match self {
                    Engine::MySql => format!(
                        "install MySQL with scripts/install-mysql.sh (looked in {}; scripts/test.sh does it)",
                        mysql_root().display()
                    ),
                    Engine::MariaDb => "install mariadb-server (scripts/test.sh does)".into(),
                }
            );
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn mysql_root() -> PathBuf {
    std::env::var_os("APPDB_MYSQL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/appdb-mysql"))
}

/// One running server. Dropping it kills the server; its folder goes with the value.
pub struct DbServer {
    /// The process, while nobody restarts it ([`DbServer::restart_on_exit`] hands it to its supervisor).
    child: Option<Child>,
    /// The command line, to start the server again.
    launch: Vec<std::ffi::OsString>,
    supervisor: Option<Supervisor>,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub socket: PathBuf,
    /// A client option file with root's credentials (mode 600), for [`DbServer::sql_as_os_root`].
    client_options: PathBuf,
}

/// How to start a server.
#[derive(Clone, Debug)]
pub struct ServerOptions<'a> {
    /// Run inside this network namespace.
    pub netns: Option<&'a str>,
    pub bind: &'a str,
    pub server_id: u32,
    /// Extra server options (buffer pool size and the like).
    pub extra: &'a [&'a str],
    /// An option file the server reads (`--defaults-file`): the operator's own server configuration.
    pub config_file: Option<&'a Path>,
}

impl Default for ServerOptions<'_> {
    fn default() -> Self {
        ServerOptions {
            netns: None,
            bind: "127.0.0.1",
            server_id: 1,
            extra: &[],
            config_file: None,
        }
    }
}

impl DbServer {
    /// Starts a server on a free loopback port with binary log, row format and GTIDs, as the operator configures
    /// database pods. `root_password` is set for `root@localhost` and `root@'%'`, and anonymous users are removed,
    /// as the official images' entrypoints do.
    pub async fn start(engine: Engine, root_password: &str) -> DbServer {
        Self::start_with(engine, root_password, ServerOptions::default()).await
    }

    /// Like [`DbServer::start`] with its own `server_id`: what replication between two servers needs.
    pub async fn start_numbered(engine: Engine, root_password: &str, server_id: u32) -> DbServer {
        Self::start_with(
            engine,
            root_password,
            ServerOptions {
                server_id,
                ..Default::default()
            },
        )
        .await
    }

    /// Like [`DbServer::start`], inside network namespace `netns`, listening on `bind`.
    pub async fn start_in(engine: Engine, netns: &str, bind: &str, root_password: &str) -> DbServer {
        let options = ServerOptions {
            netns: Some(netns),
            bind,
            ..Default::default()
        };
        Self::start_with(engine, root_password, options).await
    }

    pub async fn start_with(engine: Engine, root_password: &str, options: ServerOptions<'_>) -> DbServer {
        engine.require();
        let template = template(engine).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let out = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(&data)
            .output()
            .await
            .expect("cp");
        assert!(out.status.success(), "copying the data folder failed");
        // Each MySQL server needs its own UUID (replication refuses equal ones); it writes a new one when missing.
        let _ = std::fs::remove_file(data.join("auto.cnf"));
        let socket = dir.path().join("mysqld.sock");
        let port = free_port();
        let mut launch: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = options.netns {
            launch.extend(["ip".into(), "netns".into(), "exec".into(), ns.into()]);
        }
        launch.push(engine.server().into());
        launch.push(match options.config_file {
            Some(file) => format!("--defaults-file={}", file.display()).into(),
            None => "--no-defaults".into(),
        });
        launch.extend(
            [
                format!("--datadir={}", data.display()),
                format!("--port={port}"),
                format!("--socket={}", socket.display()),
                format!("--bind-address={}", options.bind),
                format!("--server-id={}", options.server_id),
                format!("--tmpdir={}", dir.path().display()),
                format!("--pid-file={}", dir.path().join("mysqld.pid").display()),
                format!("--log-error={}", dir.path().join("error.log").display()),
            ]
            .map(Into::into),
        );
        launch.extend(["--skip-name-resolve", "--user=root", "--log-bin=binlog"].map(Into::into));
        let engine_options: &[&str] = match engine {
            Engine::MySql => &[
                "--gtid-mode=ON",
                "--enforce-gtid-consistency=ON",
                // No X protocol listener (its fixed port would collide between servers), no file folder.
                "--mysqlx=OFF",
                "--secure-file-priv=",
            ],
            Engine::MariaDb => &["--binlog-format=ROW", "--log-slave-updates", "--gtid-strict-mode=ON"],
        };
        launch.extend(engine_options.iter().map(Into::into));
        launch.extend(options.extra.iter().map(Into::into));
        let child = spawn(&launch);
        let client_options = dir.path().join("client.cnf");
        write_private(
            &client_options,
            &format!("[client]\nuser=root\npassword=\"{root_password}\"\n"),
        );
        let mut server = DbServer {
            child: Some(child),
            launch,
            supervisor: None,
            engine,
            dir,
            port,
            socket,
            client_options,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        // The template's root has no password (MySQL) or logs in by socket (MariaDB).
        let mut port_retries = 0;
        while server.sql_over_socket(None, "SELECT 1").await.is_err() {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                // The free port was taken by a concurrent test between choosing it and binding: another port.
                let log = server.error_log();
                if log.contains("Address already in use") && port_retries < 3 {
                    port_retries += 1;
                    let _ = std::fs::remove_file(server.dir.path().join("error.log"));
                    server.port = free_port();
                    let port_arg = format!("--port={}", server.port);
                    for arg in server.launch.iter_mut() {
                        if arg.to_string_lossy().starts_with("--port=") {
                            *arg = port_arg.clone().into();
                        }
                    }
                    server.child = Some(spawn(&server.launch));
                    continue;
                }
                panic!("{engine} exited ({status}) at start: {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{engine} did not accept connections on its socket within 90 s: {}",
                server.error_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let setup = match engine {
            Engine::MySql => format!(
                "ALTER USER 'root'@'localhost' IDENTIFIED BY '{root_password}';\
                 CREATE USER 'root'@'%' IDENTIFIED BY '{root_password}';\
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            ),
            Engine::MariaDb => format!(
                "DELETE FROM mysql.global_priv WHERE User = '';\
                 FLUSH PRIVILEGES;\
                 ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('{root_password}');\
                 CREATE USER 'root'@'%' IDENTIFIED BY '{root_password}';\
                 GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
            ),
        };
        server
            .sql_over_socket(None, &setup)
            .await
            .expect("set the root password");
        server
    }

    /// The server's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Runs SQL over the socket as root, with the engine's own client.
    pub async fn sql_as_os_root(&self, sql: &str) -> Result<String, String> {
        self.sql_over_socket(Some(&self.client_options), sql).await
    }

    async fn sql_over_socket(&self, options: Option<&Path>, sql: &str) -> Result<String, String> {
        let mut command = Command::new(self.engine.client());
        match options {
            Some(file) => command.arg(format!("--defaults-extra-file={}", file.display())),
            None => command.args(["--no-defaults", "-uroot"]),
        };
        let out = command
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--protocol=socket", "-N", "-e", sql])
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

    /// The server process's id (to signal or freeze it).
    pub fn pid(&self) -> Option<u32> {
        match &self.supervisor {
            Some(s) => Some(s.pid.load(Ordering::SeqCst)).filter(|p| *p != 0),
            None => self.child.as_ref().and_then(Child::id),
        }
    }

    /// From now on the server runs as a pod's container with `restartPolicy: Always` does: when it exits (a
    /// `CLONE INSTANCE` makes MySQL exit, as does a crash), it is started again with the same options and data,
    /// after a short back-off, as the kubelet does.
    pub fn restart_on_exit(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Arc::new(AtomicU32::new(child.id().unwrap_or(0)));
        let restarts = Arc::new(AtomicU32::new(0));
        let launch = self.launch.clone();
        let (watching_pid, counting) = (pid.clone(), restarts.clone());
        let task = tokio::spawn(async move {
            loop {
                let _ = child.wait().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                child = spawn(&launch);
                watching_pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
                counting.fetch_add(1, Ordering::SeqCst);
            }
        });
        self.supervisor = Some(Supervisor { pid, restarts, task });
    }

    /// How often the server was started again since [`DbServer::restart_on_exit`].
    pub fn restarts(&self) -> u32 {
        self.supervisor
            .as_ref()
            .map(|s| s.restarts.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        }
        if let Some(supervisor) = self.supervisor.take() {
            let pid = supervisor.pid.load(Ordering::SeqCst);
            // Dropping the task drops (and so kills) the process it runs.
            supervisor.task.abort();
            let _ = supervisor.task.await;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while pid != 0
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        if let Some(supervisor) = &self.supervisor {
            supervisor.task.abort();
        }
    }
}

/// Starts the server again whenever it exits (see [`DbServer::restart_on_exit`]).
struct Supervisor {
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn(launch: &[std::ffi::OsString]) -> Child {
    Command::new(&launch[0])
        .args(&launch[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the database server")
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write the client options");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write the client options");
}

/// A freshly initialised data folder of the engine's installed version, made once and reused.
async fn template(engine: Engine) -> PathBuf {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let version = Command::new(engine.server())
        .arg("--version")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", engine.server().display()));
    let version = String::from_utf8_lossy(&version.stdout);
    let key = format!("{:016x}", fnv1a(version.trim().as_bytes()));
    let root = std::env::temp_dir().join("appdb-testkit-templates");
    let done = root.join(format!("{}-{key}", engine.name()));
    let _guard = LOCK.lock().await;
    if done.join("ready").exists() {
        return done.join("data");
    }
    std::fs::create_dir_all(&root).expect("template folder");
    let work = tempfile::Builder::new()
        .prefix(".init-")
        .tempdir_in(&root)
        .expect("template folder");
    let data = work.path().join("data");
    let out = match engine {
        Engine::MySql => Command::new(engine.server())
            .arg("--no-defaults")
            .arg("--initialize-insecure")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", work.path().display()))
            .args(["--user=root", "--log-bin=binlog", "--secure-file-priv="])
            .output()
            .await
            .expect("run mysqld --initialize-insecure"),
        Engine::MariaDb => Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", work.path().display()))
            .args(["--user=root", "--skip-test-db"])
            .output()
            .await
            .expect("run mariadb-install-db"),
    };
    assert!(
        out.status.success(),
        "initialising a {engine} data folder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(work.path().join("ready"), version.as_bytes()).expect("template");
    let kept = work.keep();
    // Another test process may have finished the same template meanwhile: either copy is good.
    if std::fs::rename(&kept, &done).is_err() {
        let _ = std::fs::remove_dir_all(&kept);
    }
    done.join("data")
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs an `async fn(Engine)` test once per engine: `on_both_engines!(name)` after `async fn name(engine: Engine)`
/// makes the tests `name::mysql` and `name::mariadb`.
#[macro_export]
macro_rules! on_both_engines {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mysql() {
                super::$test($crate::dbserver::Engine::MySql).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn mariadb() {
                super::$test($crate::dbserver::Engine::MariaDb).await
            }
        }
    )+};
}
