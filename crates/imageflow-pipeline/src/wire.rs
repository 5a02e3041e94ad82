//! Closed sets of names that travel as strings (JSON, database columns, step
//! parameters): each is an enum whose serde name, `as_str`, `Display` and
//! `FromStr` come from one list, so they cannot drift apart.

/// A name outside a closed set, with the names that are accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; allowed: {}", .allowed.join(", "))]
pub struct UnknownName {
    /// What was being named, e.g. "resize quality".
    pub what: &'static str,
    pub got: String,
    pub allowed: &'static [&'static str],
}

/// Defines a fieldless enum with one wire name per variant. Matching is exact
/// (the wire names are lowercase); callers that accept other spellings fold
/// them first.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        $vis enum $name {
            $($(#[$variant_meta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// Every wire name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::wire::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::wire::UnknownName {
                        what: $what,
                        got: s.to_string(),
                        allowed: Self::NAMES,
                    }),
                }
            }
        }
    };
}
