//! Closed sets of label values: the `reason` and `stage` enums of the
//! components' events. [`label_values!`] writes each set's enum, its `ALL`
//! (what the metrics expose at 0 from start-up), its `as_str()` (the text of
//! the metric label and of the log field, one place for both) and `Display`,
//! so a set is declared once, as variant => text pairs.

/// Declares a `Copy` enum whose variants each map to a label text:
///
/// ```
/// todo_sidecar::label::label_values! {
///     /// Why a delivery failed.
///     pub enum Reason {
///         /// No answer in time.
///         Timeout => "timeout",
///         Refused => "refused",
///     }
/// }
/// assert_eq!(Reason::ALL.map(Reason::as_str), ["timeout", "refused"]);
/// assert_eq!(Reason::Refused.to_string(), "refused");
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! __label_values {
    (
        $(#[$meta:meta])*
        $visibility:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $visibility enum $name {
            $( $(#[$variant_meta])* $variant ),+
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: [$name; <[()]>::len(&[$($crate::__label_values!(@unit $variant)),+])] =
                [$($name::$variant),+];

            /// The text of the metric label and of the log field.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, formatter: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                formatter.write_str(self.as_str())
            }
        }
    };
    (@unit $variant:ident) => { () };
}

#[doc(inline)]
pub use crate::__label_values as label_values;
