//! Minimal frame helpers for the harness and the baseline (same format as docs/PROTOCOL.md).

/// Frame header size.
pub const HEADER: usize = 12;

/// Appends one frame.
pub fn put_frame(out: &mut Vec<u8>, opcode: u16, flags: u16, rid: u32, body: &[u8]) {
    out.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&opcode.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&rid.to_le_bytes());
    out.extend_from_slice(body);
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

/// Parses the header at the start of `buf` if a whole frame is there.
pub fn whole_frame(buf: &[u8], max: usize) -> Result<Option<Head>, String> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(HEADER..=max).contains(&len) {
        return Err(format!("bad frame length {len}"));
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Head {
        len,
        opcode: u16::from_le_bytes([buf[4], buf[5]]),
        flags: u16::from_le_bytes([buf[6], buf[7]]),
        rid: u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]),
    }))
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
        assert!(whole_frame(&v, 1024).is_err());
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
