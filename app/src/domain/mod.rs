//! Validated domain types: a value of one of these types has passed its rules,
//! so the layers below (actors, database) never re-check them.

mod owner;
pub mod todo;

pub use owner::Owner;
pub use todo::{TodoDescription, TodoTitle};

/// A value broke a rule; the message is safe to show to the API consumer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct ValidationError {
    /// The JSON field or argument at fault.
    pub field: &'static str,
    /// What is wrong with it, phrased to follow the field name.
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ValidationError {
            field,
            problem: problem.into(),
        }
    }
}
