//! What differs between MySQL and MariaDB in the pods the operator runs: images, client names, environment, and the
//! server settings that keep later migration possible (binary log, row format, GTID, a unique server id).

use sha2::{Digest, Sha256};

use crate::api::app_database::Engine;

/// Facts about one engine's official image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flavor {
    pub image_repository: &'static str,
    pub default_version: &'static str,
    /// The command-line client in the image.
    pub client: &'static str,
    /// The administration tool in the image.
    pub admin_tool: &'static str,
    /// The environment variable the image's entrypoint reads the root password from.
    pub root_password_env: &'static str,
    /// The user the server runs as in the official image.
    pub uid: i64,
}

pub fn flavor(engine: Engine) -> Flavor {
    match engine {
        Engine::MySQL => Flavor {
            image_repository: "mysql",
            default_version: "8.4",
            client: "mysql",
            admin_tool: "mysqladmin",
            root_password_env: "MYSQL_ROOT_PASSWORD",
            uid: 999,
        },
        Engine::MariaDB => Flavor {
            image_repository: "mariadb",
            default_version: "11.4",
            client: "mariadb",
            admin_tool: "mariadb-admin",
            root_password_env: "MARIADB_ROOT_PASSWORD",
            uid: 999,
        },
    }
}

/// A server id unique per AppDatabase (replication needs distinct ids): derived from the object's UID, never 0.
pub fn server_id(uid: &str) -> u32 {
    let digest = Sha256::digest(uid.as_bytes());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    id.max(1)
}

/// The server configuration file (`appdb.cnf` in the image's `conf.d`).
pub fn server_config(engine: Engine, server_id: u32) -> String {
    let gtid = match engine {
        Engine::MySQL => "gtid_mode = ON\nenforce_gtid_consistency = ON\n",
        Engine::MariaDB => "gtid_strict_mode = ON\nlog_slave_updates = ON\n",
    };
    format!(
        "# Written by appdb-operator. Binary log, row format and GTIDs keep replication-based migration possible.\n\
         [mysqld]\n\
         server_id = {server_id}\n\
         log_bin = binlog\n\
         binlog_format = ROW\n\
         {gtid}\
         skip_name_resolve = ON\n\
         # The largest row must fit in one packet (the images' default is 16 or 64 MiB), also for the migration engine.\n\
         max_allowed_packet = 1G\n\
         character_set_server = utf8mb4\n\
         collation_server = utf8mb4_unicode_ci\n"
    )
}

/// The first-start script (`/docker-entrypoint-initdb.d/10-appdb-admin.sh`): creates the customer's administrator
/// with every privilege. The credentials come from the environment (Secret references), never from this file.
/// Works whether the image's entrypoint sources or executes it.
pub fn admin_init_script(engine: Engine) -> String {
    let client = flavor(engine).client;
    format!(
        r#"# Written by appdb-operator: creates the customer's administrator on the database's first start.
# Credentials come from APPDB_* environment variables (Secret references), never from this file.
appdb_escape() {{ printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g"; }}
appdb_cnf=$(mktemp)
chmod 600 "$appdb_cnf"
printf '[client]\nuser=root\npassword=%s\n' "$APPDB_ROOT_PASSWORD" > "$appdb_cnf"
# APPDB_SOCKET overrides the client's default socket path (for images that move it).
if ! {client} --defaults-extra-file="$appdb_cnf" --protocol=socket ${{APPDB_SOCKET:+--socket="$APPDB_SOCKET"}} <<APPDB_SQL
CREATE USER IF NOT EXISTS '$APPDB_ADMIN_USERNAME'@'%' IDENTIFIED BY '$(appdb_escape "$APPDB_ADMIN_PASSWORD")';
GRANT ALL PRIVILEGES ON *.* TO '$APPDB_ADMIN_USERNAME'@'%' WITH GRANT OPTION;
FLUSH PRIVILEGES;
APPDB_SQL
then
    rm -f "$appdb_cnf"
    echo "appdb-operator: creating the administrator $APPDB_ADMIN_USERNAME failed" >&2
    exit 1
fi
rm -f "$appdb_cnf"
"#
    )
}

/// The readiness probe: a real query, not a TCP check.
pub fn readiness_command(engine: Engine) -> Vec<String> {
    let client = flavor(engine).client;
    vec![
        "sh".into(),
        "-c".into(),
        format!("exec {client} -uroot -p\"$APPDB_ROOT_PASSWORD\" -h127.0.0.1 -e 'SELECT 1'"),
    ]
}

/// The liveness probe: the server process answers (even while it refuses logins).
pub fn liveness_command(engine: Engine) -> Vec<String> {
    vec![flavor(engine).admin_tool.into(), "ping".into(), "-h127.0.0.1".into()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_stable_nonzero_and_distinct() {
        assert_eq!(server_id("a"), server_id("a"));
        assert_ne!(server_id("a"), server_id("b"));
        assert!(server_id("") >= 1);
    }

    #[test]
    fn config_enables_binlog_row_format_and_gtid_per_engine() {
        let mysql = server_config(Engine::MySQL, 7);
        assert!(
            mysql.contains("server_id = 7")
                && mysql.contains("binlog_format = ROW")
                && mysql.contains("gtid_mode = ON")
        );
        assert!(mysql.contains("max_allowed_packet = 1G"));
        let maria = server_config(Engine::MariaDB, 7);
        assert!(maria.contains("gtid_strict_mode = ON") && !maria.contains("gtid_mode"));
    }

    #[test]
    fn init_script_takes_credentials_from_the_environment() {
        let script = admin_init_script(Engine::MariaDB);
        assert!(script.contains("$APPDB_ADMIN_USERNAME") && script.contains("$APPDB_ADMIN_PASSWORD"));
        assert!(script.starts_with('#') && script.contains("mariadb --defaults-extra-file"));
    }
}
