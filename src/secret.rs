//! Secret values, the one way the operator reads and makes them: a key of a Secret (from `data`, or from
//! `stringData` as written by a client that has not been through an API server's normalisation), and a new random
//! value (database passwords, replication passwords, generated VPN keys). Callers must keep these out of logs,
//! Events and status.

use k8s_openapi::api::core::v1::Secret;
use rand::{Rng, distr::Alphanumeric};

/// The value of `key`, when the Secret has it.
pub fn value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key).cloned()))
}

/// `length` letters and digits from the operating system's CSPRNG (`rand`'s thread RNG is a CSPRNG seeded from
/// it), starting with a letter: valid as a MySQL password, in a shell word, and as an AWS-style pre-shared key
/// (which must not start with `0`). 32 characters carry about 190 bits.
pub fn random(length: usize) -> String {
    let mut rng = rand::rng();
    let mut value = String::with_capacity(length);
    while value.len() < length {
        let c = char::from(rng.sample(Alphanumeric));
        if value.is_empty() && !c.is_ascii_alphabetic() {
            continue;
        }
        value.push(c);
    }
    value
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn a_value_comes_from_data_else_from_string_data() {
        let secret = Secret {
            data: Some(BTreeMap::from([("a".to_owned(), ByteString(b"from-data".to_vec()))])),
            string_data: Some(BTreeMap::from([
                ("a".to_owned(), "shadowed".to_owned()),
                ("b".to_owned(), "from-string-data".to_owned()),
            ])),
            ..Default::default()
        };
        assert_eq!(value(&secret, "a").as_deref(), Some("from-data"));
        assert_eq!(value(&secret, "b").as_deref(), Some("from-string-data"));
        assert_eq!(value(&secret, "c"), None);
    }

    #[test]
    fn random_values_start_with_a_letter_hold_only_letters_and_digits_and_differ() {
        let values: std::collections::BTreeSet<String> = (0..500).map(|_| random(32)).collect();
        assert_eq!(values.len(), 500);
        for v in &values {
            assert_eq!(v.len(), 32);
            assert!(v.starts_with(|c: char| c.is_ascii_alphabetic()), "{v}");
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric()), "{v}");
        }
    }
}
