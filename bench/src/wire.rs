//! Frame helpers for the harness and the baseline: thin adapters over `lattice_wire::frame`, so
//! both speak exactly the codec the server uses.

use lattice_wire::frame::{encode_into, parse_header};

/// Frame header size.
pub const HEADER: usize = lattice_wire::frame::HEADER_LEN;

/// Appends one frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u16, flags: u16, rid: u32, body: &[u8]) {
    encode_into(out, opcode, flags, rid, body);
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// Total length.
    pub len: usize,
    /// Opcode.
    pub opcode: u16,
    /// Flags.
    pub flags: u16,
    /// Request id.
    pub rid: u32,
}

/// Parses the header at the start of `buf` if a whole frame is there; errors on a header the codec
/// refuses (bad length, reserved flags, opcode 0).
pub fn whole_frame(buf: &[u8], max: usize) -> Result<Option<Head>, String> {
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    match parse_header(buf, max) {
        Err(e) => Err(e.to_string()),
        Ok(None) => Ok(None),
        Ok(Some(h)) if buf.len() < h.length as usize => Ok(None),
        Ok(Some(h)) => Ok(Some(Head {
            len: h.length as usize,
            opcode: h.opcode,
            flags: h.flags,
            rid: h.request_id,
        })),
    }
}

/// Parses `--key value` options into pairs; bare words are errors.
pub fn parse_flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let key = a
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {a}"))?;
        if let Some((k, v)) = key.split_once('=') {
            out.push((k.to_string(), v.to_string()));
        } else if matches!(key, "quiet" | "help") {
            out.push((key.to_string(), "true".into()));
        } else {
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            out.push((key.to_string(), v.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_bad_length() {
        let mut v = Vec::new();
        put_frame(&mut v, 4, 0, 9, b"abc");
        let h = whole_frame(&v, 1024).unwrap().unwrap();
        assert_eq!((h.len, h.opcode, h.rid), (15, 4, 9));
        assert!(whole_frame(&v[..14], 1024).unwrap().is_none());
        v[0] = 2;
        assert!(whole_frame(&v, 1024).unwrap_err().contains("out of range"));
    }

    #[test]
    fn flags_parse() {
        let a: Vec<String> = ["--x", "1", "--y=2", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(parse_flags(&a).unwrap().len(), 3);
        assert!(parse_flags(&["oops".to_string()]).is_err());
        assert!(parse_flags(&["--x".to_string()]).is_err());
    }
}
