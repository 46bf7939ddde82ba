//! JSON bodies with a key twice in one object are refused: serde_json keeps the last value and
//! the protobuf JSON mapping either one, so `{"all": false, "all": true}` would otherwise mean
//! whatever the parser picked. One pass over the document before it is read for its values;
//! nesting is bounded by serde_json's recursion limit (128).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// `Err` naming the first key found twice in one object (or the syntax error serde_json finds).
pub fn no_duplicate_keys(json: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Walk.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// Visits a value, checking every object in it.
#[derive(Clone, Copy)]
struct Walk;

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::no_duplicate_keys;

    #[test]
    fn refuses_a_key_twice_in_one_object_at_any_depth() {
        assert!(no_duplicate_keys(br#"{"a":1,"b":[{"a":2},{"a":3}],"c":{"a":{"a":4}}}"#).is_ok());
        assert!(no_duplicate_keys(br#"[1,"x",null,true,1.5,-2]"#).is_ok());
        for bad in [
            &br#"{"a":1,"a":2}"#[..],
            br#"{"x":{"b":1,"b":1}}"#,
            br#"[{"k":[{"z":0,"z":0}]}]"#,
        ] {
            let e = no_duplicate_keys(bad).unwrap_err();
            assert!(e.contains("duplicate key"), "{e}");
        }
        // Escapes are decoded before keys are compared.
        let e = no_duplicate_keys(br#"{"a":1,"\u0061":2}"#).unwrap_err();
        assert!(e.contains("duplicate key \"a\""), "{e}");
        assert!(no_duplicate_keys(b"{").is_err());
        assert!(no_duplicate_keys(b"{} x").is_err());
    }
}
