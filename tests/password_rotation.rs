//! Password rotation against a real server, MySQL and MariaDB, running the operator's own server configuration: the init script the operator renders creates the administrator,
//! `appdb-operator rotate-password` (what the rotation Job runs) changes the password; old refused, new accepted,
//! data intact.

mod support;

use appdb_testkit::{
    dbserver::{DbServer, Engine, ServerOptions},
    on_both_engines,
};

use appdb_operator::{
    api::app_database::Engine as ImageEngine,
    mysql::engine::{admin_init_script, server_config},
};
use mysql_async::prelude::Queryable;

const ROOT: &str = "RootPassw0rdGeneratedByOperator1";
const ADMIN: &str = "acme_admin";
// Quotes, backslashes and dollars exercise every layer of quoting.
const FIRST: &str = r"it's\a-Pass$9";
const SECOND: &str = r"N3w'\pass$word";

async fn rotate(db: &DbServer, root: &str, new_password: &str) -> (bool, serde_json::Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_appdb-operator"))
        .arg("rotate-password")
        .env("APPDB_HOST", "127.0.0.1")
        .env("APPDB_PORT", db.port.to_string())
        .env("APPDB_ROOT_PASSWORD", root)
        .env("APPDB_ADMIN_USERNAME", ADMIN)
        .env("APPDB_ADMIN_PASSWORD", new_password)
        .output()
        .await
        .expect("run appdb-operator rotate-password");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(new_password) && !stdout.contains(root),
        "a password reached the output: {stdout}"
    );
    let line: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("one JSON line expected ({e}): {stdout}"));
    (out.status.success(), line)
}

async fn rotation_changes_the_password_and_keeps_the_data(engine: Engine) {
    let image = match engine {
        Engine::MySql => ImageEngine::MySQL,
        Engine::MariaDb => ImageEngine::MariaDB,
    };
    // The server runs with the configuration file the operator renders into the database's ConfigMap.
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(config.path(), server_config(image, 7)).expect("write the configuration");
    let db = DbServer::start_with(
        engine,
        ROOT,
        ServerOptions {
            config_file: Some(config.path()),
            server_id: 7,
            ..Default::default()
        },
    )
    .await;
    let settings: Option<(u32, u64, i64)> = mysql_async::Conn::new(db.opts("root", ROOT))
        .await
        .expect("root")
        .query_first("SELECT @@server_id, @@max_allowed_packet, @@log_bin")
        .await
        .expect("settings");
    assert_eq!(
        settings,
        Some((7, 1 << 30, 1)),
        "the operator's configuration is in force"
    );

    // The first-start script, exactly as rendered into the database's ConfigMap.
    let script = db.dir.path().join("10-appdb-admin.sh");
    std::fs::write(&script, admin_init_script(image)).unwrap();
    let out = tokio::process::Command::new("sh")
        .arg(&script)
        .env("APPDB_ROOT_PASSWORD", ROOT)
        .env("APPDB_ADMIN_USERNAME", ADMIN)
        .env("APPDB_ADMIN_PASSWORD", FIRST)
        .env("APPDB_SOCKET", &db.socket)
        // The image's own client, found by its bare name as in the image.
        .env("PATH", engine.path_env())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "init script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut conn = mysql_async::Conn::new(db.opts(ADMIN, FIRST))
        .await
        .expect("admin logs in with the first password");
    conn.query_drop("CREATE DATABASE app").await.unwrap();
    conn.query_drop("CREATE TABLE app.orders (id INT PRIMARY KEY, note VARCHAR(40))")
        .await
        .unwrap();
    for i in 0..100 {
        conn.exec_drop("INSERT INTO app.orders VALUES (?, ?)", (i, format!("order {i}")))
            .await
            .unwrap();
    }
    conn.disconnect().await.unwrap();

    let (ok, line) = rotate(&db, ROOT, SECOND).await;
    assert!(ok, "{line}");
    assert_eq!(line["phase"], "rotate-password");
    assert_eq!(line["result"], "ok");

    match mysql_async::Conn::new(db.opts(ADMIN, FIRST)).await {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1045, "access denied for the old password"),
        Err(other) => panic!("expected access denied, got {other}"),
        Ok(_) => panic!("the old password still works"),
    }
    let mut conn = mysql_async::Conn::new(db.opts(ADMIN, SECOND))
        .await
        .expect("the new password works");
    let count: Option<i64> = conn.query_first("SELECT COUNT(*) FROM app.orders").await.unwrap();
    assert_eq!(count, Some(100), "data intact");
    let grants: Vec<String> = conn.query("SHOW GRANTS").await.unwrap();
    assert!(
        grants
            .iter()
            // MySQL spells ALL PRIVILEGES out, privilege by privilege.
            .any(|g| g.contains(" ON *.*")
                && g.contains("WITH GRANT OPTION")
                && (g.contains("ALL PRIVILEGES") || g.contains("SELECT, INSERT, UPDATE, DELETE, CREATE, DROP"))),
        "{grants:?}"
    );
    conn.disconnect().await.unwrap();

    // Idempotent: running it again changes nothing and succeeds.
    assert!(rotate(&db, ROOT, SECOND).await.0);
    // Refusals are clear and never echo a password.
    let (ok, line) = rotate(&db, "not-the-root-password", SECOND).await;
    assert!(!ok && line["result"] == "error", "{line}");
    assert!(
        line["message"].as_str().unwrap_or_default().contains("cannot connect"),
        "{line}"
    );
    let (ok, line) = rotate(&db, ROOT, "short").await;
    assert!(
        !ok && line["message"].as_str().unwrap_or_default().contains("longer than 8"),
        "{line}"
    );
    // The first-start script fails the start (non-zero) when it cannot create the administrator.
    let out = tokio::process::Command::new("sh")
        .arg(&script)
        .env("APPDB_ROOT_PASSWORD", "wrong-root")
        .env("APPDB_ADMIN_USERNAME", "other_admin")
        .env("APPDB_ADMIN_PASSWORD", FIRST)
        .env("APPDB_SOCKET", "/nonexistent/socket")
        .env("PATH", engine.path_env())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("creating the administrator other_admin failed"));
    db.stop().await;
}

on_both_engines!(rotation_changes_the_password_and_keeps_the_data);
