//! Names for husk's vocabulary enums: one declaration gives a field-less enum its list of values, the name of
//! each (as its JSON, logs and APIs spell it), `Display`, and lookup by name, instead of the same three impls
//! written by hand for every enum.

/// Gives a field-less enum `ALL`, `as_str`, `from_name` and `Display` from one `Variant => "name"` list.
///
/// The names must be the enum's serde names; each enum's unit test checks that with
/// [`assert_names_are_serde_names`].
macro_rules! named_values {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order messages list them.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The value's name, as husk's JSON, logs and APIs spell it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// The value named exactly `name`, if there is one.
            pub fn from_name(name: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.as_str() == name)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use named_values;

/// Checks that every value's name is its serde (JSON) form, and that the name finds it again.
#[cfg(test)]
pub(crate) fn assert_names_are_serde_names<T>(all: &[T], as_str: fn(T) -> &'static str)
where
    T: Copy + PartialEq + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    for &value in all {
        let name = as_str(value);
        assert_eq!(
            serde_json::to_value(value).unwrap(),
            serde_json::Value::from(name),
            "{value:?}"
        );
        assert_eq!(serde_json::from_value::<T>(name.into()).unwrap(), value);
    }
}
