//! The administrator password rule of the platform (seed 002): longer than 8 characters, printable ASCII, and none of
//! space, `/`, `"` or `@`. The password lives in a Secret, so no CRD rule can see it; the AppDatabase controller calls
//! this before using it.
//!
//! The rule also has an upper bound, [`MAX_LENGTH`]: the password reaches the database pod as an environment value, and
//! a node refuses to start a container whose environment string is over 128 KiB, so an unbounded password would be
//! "Ready To Use" here and never start there. 128 characters is far above any password manager's default.

/// Why a password is refused. Messages never contain the password itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be longer than 8 characters (it has {0})")]
    TooShort(usize),
    #[error("the password must be at most 128 characters (it has {0})")]
    TooLong(usize),
    #[error("the password may contain only printable ASCII characters (character {position} is not)")]
    NotPrintableAscii { position: usize },
    #[error("the password must not contain {forbidden} (character {position})")]
    ForbiddenCharacter { forbidden: &'static str, position: usize },
}

/// The shortest accepted password: "longer than 8 characters".
pub const MIN_LENGTH: usize = 9;

/// The longest accepted password. Keep in step with the `TooLong` message.
pub const MAX_LENGTH: usize = 128;

/// Checks `password` against the platform's rule. Positions in errors are 1-based character positions.
pub fn validate_admin_password(password: &str) -> Result<(), PasswordError> {
    // Checked first and in bytes, so a huge value is refused without walking it; for the printable ASCII the rule
    // allows, bytes are characters.
    if password.len() > MAX_LENGTH {
        return Err(PasswordError::TooLong(password.chars().count()));
    }
    for (index, c) in password.chars().enumerate() {
        let position = index + 1;
        let forbidden = match c {
            ' ' => Some("a space"),
            '/' => Some("'/'"),
            '"' => Some("'\"'"),
            '@' => Some("'@'"),
            _ => None,
        };
        if let Some(forbidden) = forbidden {
            return Err(PasswordError::ForbiddenCharacter { forbidden, position });
        }
        if !c.is_ascii_graphic() {
            return Err(PasswordError::NotPrintableAscii { position });
        }
    }
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(PasswordError::TooShort(length));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_passwords() {
        for ok in [
            "abcdefghi",
            "S3cure!pass",
            "~`!#$%^&*()_+-={}[]|\\:;'<>,.?",
            "123456789",
            "x".repeat(MAX_LENGTH).as_str(),
        ] {
            assert_eq!(validate_admin_password(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn length_has_an_upper_bound() {
        assert_eq!(
            validate_admin_password(&"x".repeat(129)),
            Err(PasswordError::TooLong(129))
        );
        // The case the issue found: a 200 KiB password was accepted.
        let huge = "x".repeat(200 * 1024);
        assert_eq!(validate_admin_password(&huge), Err(PasswordError::TooLong(200 * 1024)));
    }

    #[test]
    fn length_must_exceed_eight() {
        assert_eq!(validate_admin_password("abcdefgh"), Err(PasswordError::TooShort(8)));
        assert_eq!(validate_admin_password(""), Err(PasswordError::TooShort(0)));
        assert_eq!(validate_admin_password("abcdefghi"), Ok(()));
    }

    #[test]
    fn forbidden_characters_are_named() {
        let cases = [
            ("abc defghij", "a space", 4),
            ("abc/defghij", "'/'", 4),
            ("abc\"defghij", "'\"'", 4),
            ("@bcdefghij", "'@'", 1),
        ];
        for (pw, forbidden, position) in cases {
            assert_eq!(
                validate_admin_password(pw),
                Err(PasswordError::ForbiddenCharacter { forbidden, position })
            );
        }
    }

    #[test]
    fn non_printable_and_non_ascii_refused() {
        assert_eq!(
            validate_admin_password("abcdefghi\n"),
            Err(PasswordError::NotPrintableAscii { position: 10 })
        );
        assert_eq!(
            validate_admin_password("abcdefghi\t"),
            Err(PasswordError::NotPrintableAscii { position: 10 })
        );
        assert_eq!(
            validate_admin_password("pässwort12"),
            Err(PasswordError::NotPrintableAscii { position: 2 })
        );
        assert_eq!(
            validate_admin_password("abcdefghi\u{7f}"),
            Err(PasswordError::NotPrintableAscii { position: 10 })
        );
    }

    #[test]
    fn messages_never_contain_the_password() {
        for pw in ["short", "has space inside", "mötley-crüe-pw"] {
            let message = validate_admin_password(pw).unwrap_err().to_string();
            assert!(!message.contains(pw), "{message}");
        }
    }
}
