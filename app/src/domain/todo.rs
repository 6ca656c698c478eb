//! The validated parts of a todo that a client may set.

use super::ValidationError;

/// A todo's title: 1 to 255 characters once surrounding whitespace is
/// trimmed, without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoTitle(String);

impl TodoTitle {
    /// Longest title, matching the `VARCHAR(255)` column (PostgreSQL counts characters).
    pub const MAX_CHARS: usize = 255;

    pub fn parse(raw: String) -> Result<TodoTitle, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValidationError::new("title", "must not be empty"));
        }
        if trimmed.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "title",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "title",
                "must not contain control characters",
            ));
        }
        let title = if trimmed.len() == raw.len() {
            raw
        } else {
            trimmed.to_string()
        };
        Ok(TodoTitle(title))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A todo's free-text description: at most 10,000 characters. Newlines and
/// tabs are allowed; other control characters and NUL (which PostgreSQL
/// rejects in text) are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoDescription(String);

impl TodoDescription {
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(raw: String) -> Result<TodoDescription, ValidationError> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "description",
                format!("must be at most {} characters", Self::MAX_CHARS),
            ));
        }
        if raw
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(ValidationError::new(
                "description",
                "must not contain control characters other than newlines and tabs",
            ));
        }
        Ok(TodoDescription(raw))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded_in_characters() {
        assert_eq!(
            TodoTitle::parse("  buy milk ".into()).unwrap().as_str(),
            "buy milk"
        );
        assert!(TodoTitle::parse("ü".repeat(255)).is_ok());
        assert!(TodoTitle::parse("ü".repeat(256)).is_err());
    }

    #[test]
    fn blank_or_control_titles_are_rejected() {
        assert!(TodoTitle::parse("   ".into()).is_err());
        assert!(TodoTitle::parse("".into()).is_err());
        assert!(TodoTitle::parse("a\u{0}b".into()).is_err());
    }

    #[test]
    fn descriptions_allow_newlines_but_not_nul() {
        assert!(TodoDescription::parse("line one\nline two\t!".into()).is_ok());
        assert!(TodoDescription::parse("nul\u{0}".into()).is_err());
        assert!(TodoDescription::parse("x".repeat(10_001)).is_err());
    }
}
