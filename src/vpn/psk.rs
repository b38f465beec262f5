//! Pre-shared keys, by AWS's rules: 8–64 characters of letters, digits, `.` and `_`, not starting with `0`
//! (strongSwan reads a leading `0x`/`0s` as hex/base64). Generated keys are 32 letters and digits from the OS CSPRNG.

pub const GENERATED_LENGTH: usize = 32;

/// Why a customer-supplied key is refused. Never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    #[error("a pre-shared key must be 8 to 64 characters long (it has {0})")]
    Length(usize),
    #[error("a pre-shared key may contain only letters, digits, '.' and '_' (character {0} is not)")]
    Character(usize),
    #[error("a pre-shared key must not start with 0")]
    LeadingZero,
}

pub fn validate_psk(key: &str) -> Result<(), PskError> {
    let length = key.chars().count();
    if !(8..=64).contains(&length) {
        return Err(PskError::Length(length));
    }
    if let Some(position) = key
        .chars()
        .position(|c| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
    {
        return Err(PskError::Character(position + 1));
    }
    if key.starts_with('0') {
        return Err(PskError::LeadingZero);
    }
    Ok(())
}

/// A new key: random letters and digits from the OS CSPRNG (`crate::secret::random`), valid by the rules above.
pub fn generate_psk() -> String {
    let key = crate::secret::random(GENERATED_LENGTH);
    debug_assert!(validate_psk(&key).is_ok());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_follow_the_rules_and_differ() {
        let keys: std::collections::BTreeSet<String> = (0..500).map(|_| generate_psk()).collect();
        assert_eq!(keys.len(), 500);
        for k in &keys {
            assert_eq!(k.len(), GENERATED_LENGTH);
            assert_eq!(validate_psk(k), Ok(()), "{k}");
        }
    }

    #[test]
    fn customer_keys_are_checked() {
        assert_eq!(validate_psk("abc.def_123"), Ok(()));
        assert_eq!(validate_psk("short"), Err(PskError::Length(5)));
        assert_eq!(validate_psk(&"a".repeat(65)), Err(PskError::Length(65)));
        assert_eq!(validate_psk("has-dash-1"), Err(PskError::Character(4)));
        assert_eq!(validate_psk("0xdeadbeef"), Err(PskError::LeadingZero));
        assert!(!PskError::Character(3).to_string().contains("has-dash"));
    }
}
