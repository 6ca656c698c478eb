//! The owner of API keys and todos.

use std::fmt;
use std::sync::Arc;

use super::ValidationError;

/// Who a key belongs to; every todo query is scoped to one owner.
///
/// Cheap to clone (shared string) because it travels with every request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner(Arc<str>);

impl Owner {
    /// Longest owner name, matching the `VARCHAR(255)` columns.
    pub const MAX_CHARS: usize = 255;

    /// Accepts 1 to 255 characters with no control characters and no
    /// surrounding whitespace (an owner name is an identifier, not prose).
    pub fn parse(name: &str) -> Result<Owner, ValidationError> {
        if name.is_empty() {
            return Err(ValidationError::new("owner", "must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "owner",
                "must be at most 255 characters",
            ));
        }
        if name.trim() != name {
            return Err(ValidationError::new(
                "owner",
                "must not start or end with whitespace",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "owner",
                "must not contain control characters",
            ));
        }
        Ok(Owner(Arc::from(name)))
    }

    /// An owner read back from the database, where it was validated on the way in.
    pub(crate) fn from_trusted(name: String) -> Owner {
        Owner(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_accepted() {
        assert_eq!(Owner::parse("alice").unwrap().as_str(), "alice");
        assert!(Owner::parse(&"é".repeat(255)).is_ok());
    }

    #[test]
    fn empty_long_padded_or_control_names_are_rejected() {
        assert!(Owner::parse("").is_err());
        assert!(Owner::parse(&"a".repeat(256)).is_err());
        assert!(Owner::parse(" alice").is_err());
        assert!(Owner::parse("al\nice").is_err());
    }
}
