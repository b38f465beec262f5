//! Which container images a customer may choose for its database (`AppDatabase.spec.image`, a migration's
//! `target.image`). The image runs in the customer's namespace with the database's Secrets, so the platform decides
//! where images may come from; the operator refuses any other with a reason (`ImageNotAllowed`).
//!
//! An allow-list entry is a repository (`mysql`, `docker.io/library/mariadb`, `registry.example/dba/mysql`), which
//! admits that repository with any tag or digest, or a prefix ending in `/` (`registry.example/dba/`), which admits
//! every repository under it.

/// The engines' official repositories, as Docker Hub names them, short and long.
pub const DEFAULT_ALLOWED: &[&str] = &[
    "mysql",
    "mariadb",
    "docker.io/library/mysql",
    "docker.io/library/mariadb",
];

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image {image} is not allowed here: the platform allows {}", allowed.join(", "))]
pub struct ImageNotAllowed {
    pub image: String,
    pub allowed: Vec<String>,
}

/// The repository of an image reference: without its digest (`@sha256:…`) and tag (`:8.4`, but not a registry's
/// port, `registry:5000/mysql`).
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// Whether `image` may run, given the allow-list.
pub fn check(image: &str, allowed: &[String]) -> Result<(), ImageNotAllowed> {
    let repo = repository(image.trim());
    let ok = allowed.iter().any(|entry| {
        let entry = entry.trim();
        if entry.ends_with('/') {
            repo.starts_with(entry) && repo.len() > entry.len()
        } else {
            repo == entry
        }
    });
    if ok {
        Ok(())
    } else {
        Err(ImageNotAllowed {
            image: image.to_owned(),
            allowed: allowed.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_ALLOWED.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn repositories_lose_tag_and_digest_but_keep_a_registry_port() {
        assert_eq!(repository("mysql:8.4"), "mysql");
        assert_eq!(
            repository("docker.io/library/mariadb:11.4@sha256:abc"),
            "docker.io/library/mariadb"
        );
        assert_eq!(repository("registry:5000/dba/mysql"), "registry:5000/dba/mysql");
        assert_eq!(repository("registry:5000/dba/mysql:9"), "registry:5000/dba/mysql");
        assert_eq!(repository("mysql"), "mysql");
    }

    #[test]
    fn the_official_images_pass_and_anything_else_is_refused_by_name() {
        for ok in [
            "mysql:9.7",
            "mariadb:11.8",
            "docker.io/library/mysql@sha256:0123",
            "mariadb",
        ] {
            assert_eq!(check(ok, &defaults()), Ok(()), "{ok}");
        }
        for refused in [
            "evil.example/mysql:8.4",
            "mysql-tools:1",
            "docker.io/attacker/mysql:8.4",
            "mysqlx",
        ] {
            let e = check(refused, &defaults()).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("image {refused} is not allowed here")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_prefix_entry_admits_a_whole_registry_path() {
        let allowed = vec!["registry.example/dba/".to_owned()];
        assert_eq!(check("registry.example/dba/mysql:9.7", &allowed), Ok(()));
        assert!(check("registry.example/dbax/mysql:9.7", &allowed).is_err());
        assert!(check("registry.example/dba/", &allowed).is_err());
        assert!(check("mysql:9.7", &[]).is_err(), "an empty list allows nothing");
    }
}
