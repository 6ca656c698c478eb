//! The validated parts of a todo that a client may set, and the character
//! classes their rules use (which the OpenAPI `pattern`s restate).

use super::ValidationError;

/// Control characters, as `char::is_control` defines them (Unicode `Cc`).
pub const CONTROLS: &[(char, char)] = &[('\u{0000}', '\u{001F}'), ('\u{007F}', '\u{009F}')];

/// Bidirectional embedding, override and isolate controls. They reorder how
/// the text after them is displayed, so a title could show one thing and
/// say another (the "Trojan Source" trick): refused in titles and
/// descriptions. The marks U+200E, U+200F and U+061C, which only nudge
/// neighbouring punctuation, stay allowed.
pub const BIDI_CONTROLS: &[(char, char)] = &[('\u{202A}', '\u{202E}'), ('\u{2066}', '\u{2069}')];

/// Whitespace, as `char::is_whitespace` defines it (Unicode `White_Space`).
pub const WHITESPACE: &[(char, char)] = &[
    ('\u{0009}', '\u{000D}'),
    ('\u{0020}', '\u{0020}'),
    ('\u{0085}', '\u{0085}'),
    ('\u{00A0}', '\u{00A0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200A}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202F}', '\u{202F}'),
    ('\u{205F}', '\u{205F}'),
    ('\u{3000}', '\u{3000}'),
];

/// Characters that show nothing by themselves: Unicode's
/// `Default_Ignorable_Code_Point`s of the Basic Multilingual Plane
/// (zero-width spaces and joiners, soft hyphen, format and direction marks,
/// variation selectors, Hangul fillers). Those outside it (tags and the
/// supplementary variation selectors, U+E0000 to U+E0FFF, and two tiny
/// ranges of format controls) count as visible: the OpenAPI pattern could
/// only exclude them with surrogate ranges, which fuzzers and validators
/// reading patterns code point by code point cannot use.
pub const DEFAULT_IGNORABLES: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),
    ('\u{034F}', '\u{034F}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{115F}', '\u{1160}'),
    ('\u{17B4}', '\u{17B5}'),
    ('\u{180B}', '\u{180F}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{206F}'),
    ('\u{3164}', '\u{3164}'),
    ('\u{FE00}', '\u{FE0F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFA0}', '\u{FFA0}'),
    ('\u{FFF0}', '\u{FFF8}'),
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|(low, high)| (*low..=*high).contains(&c))
}

/// Whether `c` is a bidirectional embedding, override or isolate control.
pub fn is_bidi_control(c: char) -> bool {
    in_ranges(c, BIDI_CONTROLS)
}

/// Whether `c` shows something: not whitespace, not a control character,
/// not default-ignorable.
pub fn is_visible(c: char) -> bool {
    !c.is_whitespace() && !c.is_control() && !in_ranges(c, DEFAULT_IGNORABLES)
}

/// A todo's title: 1 to 255 characters once surrounding whitespace is
/// trimmed, at least one of them visible (see [`is_visible`]), without
/// control characters or bidirectional controls.
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
        if trimmed.chars().any(is_bidi_control) {
            return Err(ValidationError::new(
                "title",
                "must not contain bidirectional embedding, override or isolate characters (U+202A to U+202E, U+2066 to U+2069)",
            ));
        }
        if !trimmed.chars().any(is_visible) {
            return Err(ValidationError::new(
                "title",
                "must contain a visible character (not only whitespace, zero-width or format characters)",
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
/// tabs are allowed; other control characters, NUL (which PostgreSQL
/// rejects in text) and bidirectional controls are not.
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
        if raw.chars().any(is_bidi_control) {
            return Err(ValidationError::new(
                "description",
                "must not contain bidirectional embedding, override or isolate characters (U+202A to U+202E, U+2066 to U+2069)",
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
    fn a_title_needs_a_visible_character() {
        for invisible in [
            "\u{200B}\u{200B}",
            "\u{FEFF}",
            "\u{3164}",
            "\u{00AD}\u{2060}",
        ] {
            let error = TodoTitle::parse(invisible.into()).unwrap_err();
            assert!(error.problem.contains("visible"), "{invisible:?}: {error}");
        }
        for visible in ["a\u{200B}", "🍕", "\u{05D0}\u{200F}", "e\u{0301}"] {
            assert!(TodoTitle::parse(visible.into()).is_ok(), "{visible:?}");
        }
    }

    #[test]
    fn bidi_overrides_are_refused_and_direction_marks_allowed() {
        assert!(TodoTitle::parse("abc\u{202E}fdp.exe".into()).is_err());
        assert!(TodoTitle::parse("x\u{2067}y".into()).is_err());
        assert!(TodoDescription::parse("x\u{202D}y".into()).is_err());
        assert!(TodoTitle::parse("שלום\u{200F}!".into()).is_ok());
    }

    #[test]
    fn the_character_tables_match_the_standard_library() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(in_ranges(c, WHITESPACE), c.is_whitespace(), "{c:?}");
            assert_eq!(in_ranges(c, CONTROLS), c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn descriptions_allow_newlines_but_not_nul() {
        assert!(TodoDescription::parse("line one\nline two\t!".into()).is_ok());
        assert!(TodoDescription::parse("nul\u{0}".into()).is_err());
        assert!(TodoDescription::parse("x".repeat(10_001)).is_err());
    }
}
