//! What a configuration error says: `ConfigError` names a field, its value and what is allowed;
//! `UnknownKey` names a key no struct has and the closest valid one, taken from the one list of
//! field names serde reads (`field_names`).

use std::fmt;

/// A configuration error: names the field, the offending value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value:?} is invalid: {allowed}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: String,
    pub allowed: String,
}

pub(super) fn bad(field: &'static str, value: impl fmt::Display, allowed: impl Into<String>) -> ConfigError {
    ConfigError { field, value: value.to_string(), allowed: allowed.into() }
}

/// An unknown key in a configuration file, a sweep spec or `--set`, with the closest valid name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown key `{key}` {place}: did you mean `{closest}`?{listing}")]
pub struct UnknownKey {
    pub key: String,
    pub place: String,
    pub closest: &'static str,
    /// The valid names, when none of them is close (empty otherwise).
    listing: String,
}

/// The field names serde reads for `T` (captured from `deserialize_struct`): the one list of
/// valid keys of a struct, so that no second table of names can drift from the struct.
pub fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("field names only"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// Rejects the first key that is not in `valid`, naming the closest valid one (Damerau-Levenshtein
/// distance, so a transposition like `depht` counts as one edit). `place` says where the key was.
pub fn check_keys<'k>(
    keys: impl IntoIterator<Item = &'k String>,
    valid: &'static [&'static str],
    place: &str,
) -> Result<(), UnknownKey> {
    for key in keys {
        if valid.contains(&key.as_str()) {
            continue;
        }
        let distance = |name: &str| strsim::damerau_levenshtein(&key.replace('-', "_"), name);
        let closest = valid.iter().copied().min_by_key(|name| distance(name)).unwrap_or("");
        // A suggestion that changes more than a third of the name is a guess: list them all.
        let far = distance(closest) * 3 > closest.len().max(key.len());
        let listing = if far { format!(" (valid keys: {})", valid.join(", ")) } else { String::new() };
        return Err(UnknownKey { key: key.clone(), place: place.to_string(), closest, listing });
    }
    Ok(())
}
