//! Column values: what marks carry, what the journal encodes and what dump records hold.
//!
//! Owns the value type, its binary encoding and its JSON form. Knows nothing of tables or backends.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::hash::{Hash, Hasher};

/// One SQL value. Floats compare and hash by their bits so a value can be part of a dirty-map key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// Double-precision float.
    Float(f64),
    /// UTF-8 text.
    Text(String),
    /// Binary data (hex in dump records).
    Bytes(#[serde(serialize_with = "ser_hex", deserialize_with = "de_hex")] Vec<u8>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::UInt(a), Value::UInt(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Text(a), Value::Text(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self {
            Value::Null => h.write_u8(0),
            Value::Int(v) => {
                h.write_u8(1);
                h.write_i64(*v)
            }
            Value::UInt(v) => {
                h.write_u8(2);
                h.write_u64(*v)
            }
            Value::Float(v) => {
                h.write_u8(3);
                h.write_u64(v.to_bits())
            }
            Value::Text(v) => {
                h.write_u8(4);
                v.hash(h)
            }
            Value::Bytes(v) => {
                h.write_u8(5);
                v.hash(h)
            }
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(v.into())
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::UInt(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    /// The integer, if this is an `Int` or a `UInt` that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::UInt(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    /// Text, or bytes that are valid UTF-8 (MySQL returns text columns as bytes).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Appends the journal encoding (tag byte, then fixed-width or length-prefixed data).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Int(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::UInt(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            Value::Float(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            Value::Text(s) => {
                out.push(4);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Bytes(b) => {
                out.push(5);
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }

    /// Decodes one value from `buf` at `*pos`; `None` on a malformed or short buffer.
    pub(crate) fn decode(buf: &[u8], pos: &mut usize) -> Option<Value> {
        let tag = *buf.get(*pos)?;
        *pos += 1;
        let v = match tag {
            0 => Value::Null,
            1 => Value::Int(i64::from_le_bytes(take::<8>(buf, pos)?)),
            2 => Value::UInt(u64::from_le_bytes(take::<8>(buf, pos)?)),
            3 => Value::Float(f64::from_bits(u64::from_le_bytes(take::<8>(buf, pos)?))),
            4 | 5 => {
                let n = u32::from_le_bytes(take::<4>(buf, pos)?) as usize;
                let end = pos.checked_add(n)?;
                let bytes = buf.get(*pos..end)?.to_vec();
                *pos = end;
                if tag == 4 {
                    Value::Text(String::from_utf8(bytes).ok()?)
                } else {
                    Value::Bytes(bytes)
                }
            }
            _ => return None,
        };
        Some(v)
    }

    /// Rough heap + inline size, used for the journal buffer bound.
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => 9,
            Value::Text(s) => 5 + s.len(),
            Value::Bytes(b) => 5 + b.len(),
        }
    }
}

pub(crate) fn take<const N: usize>(buf: &[u8], pos: &mut usize) -> Option<[u8; N]> {
    let end = pos.checked_add(N)?;
    let s = buf.get(*pos..end)?;
    *pos = end;
    s.try_into().ok()
}

fn ser_hex<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(b.len() * 2);
    for x in b {
        out.push(HEX[(x >> 4) as usize] as char);
        out.push(HEX[(x & 15) as usize] as char);
    }
    s.serialize_str(&out)
}

fn de_hex<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    let nib = |c: u8| -> Result<u8, D::Error> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(serde::de::Error::custom("bad hex digit")),
        }
    };
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(serde::de::Error::custom("odd hex length"));
    }
    b.chunks(2)
        .map(|p| Ok(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let vals = vec![
            Value::Null,
            Value::Int(-5),
            Value::UInt(u64::MAX),
            Value::Float(1.5),
            Value::Text("héllo".into()),
            Value::Bytes(vec![0, 255, 7]),
        ];
        let mut buf = Vec::new();
        for v in &vals {
            v.encode(&mut buf);
        }
        let mut pos = 0;
        let back: Vec<Value> = (0..vals.len())
            .map(|_| Value::decode(&buf, &mut pos).expect("decodes"))
            .collect();
        assert_eq!(back, vals);
        assert_eq!(pos, buf.len());
        // Truncated input is an error, never a panic.
        for cut in 0..buf.len() {
            let mut p = 0;
            let mut n = 0;
            while Value::decode(&buf[..cut], &mut p).is_some() {
                n += 1;
            }
            assert!(n < vals.len());
        }
    }

    #[test]
    fn json_round_trip_uses_hex_for_bytes() {
        let v = vec![
            Value::Bytes(vec![0xab, 0x01]),
            Value::Text("x".into()),
            Value::Null,
        ];
        let s = serde_json::to_string(&v).expect("serialises");
        assert!(s.contains("\"ab01\""), "{s}");
        let back: Vec<Value> = serde_json::from_str(&s).expect("parses");
        assert_eq!(back, v);
        assert!(serde_json::from_str::<Value>(r#"{"bytes":"abc"}"#).is_err());
    }
}
