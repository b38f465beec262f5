//! Which local program stands in for an image. A cluster pulls images; the pod runner maps each image it knows to
//! a program on this machine, and leaves a pod whose image is not in the table waiting with `ErrImagePull`, as a
//! cluster does for an image it cannot pull.
//!
//! | Image (any registry prefix and tag) | Program |
//! |---|---|
//! | `mysql`, `library/mysql` | MySQL's `mysqld` (scripts/install-mysql.sh), behind the official image's entrypoint (`entrypoint`) |
//! | `mariadb`, `library/mariadb` | `mariadbd`, behind the same entrypoint's MariaDB flavour |
//! | `…/appdb-operator` | the built `appdb-operator` |
//! | `…/appdb-vpn-gateway` | the gateway image's programs: charon, swanctl and the built `appdb-operator` |
//! | `appdb-test/session` | a shell with the engine's command-line client (a customer's session, for tests) |
//! | `appdb-test/dns` | the test cluster's DNS (`images/dns.py`, CoreDNS's answers for Services and pods) |

/// What runs for an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    MySql,
    MariaDb,
    Operator,
    Gateway,
    Session,
    Dns,
}

/// The repository of an image reference, without registry, tag or digest: `docker.io/library/mysql:8.4` →
/// `library/mysql`, `ghcr.io/appdb-dev/appdb-operator@sha256:…` → `appdb-dev/appdb-operator`.
pub fn repository(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    // A tag follows the last ':' after the last '/' (a registry may carry a port: `host:5000/x`).
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let without_tag = match without_digest[last_slash..].find(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    // The first component is a registry when it has a dot or a port, or is `localhost`.
    match without_tag.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
        _ => without_tag,
    }
}

/// The program for an image; `None`: the pod waits with `ErrImagePull`.
pub fn lookup(reference: &str) -> Option<Image> {
    let repo = repository(reference);
    let name = repo.rsplit('/').next().unwrap_or(repo);
    match (repo, name) {
        ("mysql" | "library/mysql", _) => Some(Image::MySql),
        ("mariadb" | "library/mariadb", _) => Some(Image::MariaDb),
        ("appdb-test/session", _) => Some(Image::Session),
        ("appdb-test/dns", _) => Some(Image::Dns),
        (_, "appdb-operator") => Some(Image::Operator),
        (_, "appdb-vpn-gateway") => Some(Image::Gateway),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_lose_registry_tag_and_digest() {
        assert_eq!(repository("mysql:8.4"), "mysql");
        assert_eq!(repository("docker.io/library/mysql:8.4"), "library/mysql");
        assert_eq!(
            repository("ghcr.io/appdb-dev/appdb-operator@sha256:abc"),
            "appdb-dev/appdb-operator"
        );
        assert_eq!(repository("localhost:5000/appdb-operator:dev"), "appdb-operator");
        assert_eq!(repository("mariadb"), "mariadb");
    }

    #[test]
    fn the_table() {
        assert_eq!(lookup("mysql:8.4"), Some(Image::MySql));
        assert_eq!(lookup("docker.io/library/mysql:9.1"), Some(Image::MySql));
        assert_eq!(lookup("mariadb:11.4"), Some(Image::MariaDb));
        assert_eq!(lookup("ghcr.io/appdb-dev/appdb-operator:0.1.0"), Some(Image::Operator));
        assert_eq!(
            lookup("ghcr.io/appdb-dev/appdb-vpn-gateway:0.1.0"),
            Some(Image::Gateway)
        );
        assert_eq!(lookup("appdb-test/session:latest"), Some(Image::Session));
        // Not pulled: the pod waits, as a cluster would.
        assert_eq!(lookup("evil.example/cryptominer:1"), None);
        assert_eq!(lookup("mysqlx:1"), None);
        assert_eq!(lookup("someone/mysql:8.4"), None);
    }
}
