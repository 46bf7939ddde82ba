//! `lattice tool version [VERSION]`: the 6-byte protocol version, packed and unpacked.
//!
//! Without an argument it describes the version this build speaks; with one it converts a text
//! version (`1.4.17-beta`) or a packed one (`0x00010004 0441`, 12 hex digits, with or without
//! `0x`) to the other forms.

use lattice_proto::version::{Version, VersionError, PROTOCOL};

/// Why the argument could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VersionToolError {
    /// Not a text version.
    #[error(transparent)]
    Text(#[from] VersionError),
    /// Hex of the wrong length or with non-hex digits.
    #[error("packed version {0:?}: expected 12 hex digits (6 bytes), e.g. 0x000100000000")]
    Hex(String),
}

/// Parses `arg` as text (`1.4.17-beta`) or as 12 hex digits (6 bytes, big-endian).
pub fn parse(arg: &str) -> Result<Version, VersionToolError> {
    let hex = arg.strip_prefix("0x").unwrap_or(arg);
    if !arg.contains('.') {
        if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VersionToolError::Hex(arg.to_string()));
        }
        let packed = u64::from_str_radix(hex, 16).map_err(|_| VersionToolError::Hex(arg.into()))?;
        return Ok(Version::from_packed(packed)?);
    }
    Ok(arg.parse()?)
}

/// The report for `v`: text, packed (hex and bytes), and each field with its bits.
pub fn describe(v: Version) -> String {
    let bytes = v.to_bytes();
    let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "version   {v}\n\
         packed    {:#014x} (6 bytes, big-endian: {})\n\
         major     {:>5}  (16 bits)\n\
         minor     {:>5}  (16 bits)\n\
         revision  {:>5}  (10 bits)\n\
         stage     {:>5}  (6 bits: {})\n\
         compatible with this build ({PROTOCOL}): {}\n",
        v.to_packed(),
        hex.join(" "),
        v.major(),
        v.minor(),
        v.revision(),
        v.stage() as u8,
        v.stage().as_str(),
        if v.compatible_with(&PROTOCOL) {
            "yes (same major)"
        } else {
            "no (major differs)"
        },
    )
}

/// Runs the tool; the output or a one-line error.
pub fn run(arg: Option<&str>) -> Result<String, VersionToolError> {
    let v = match arg {
        Some(a) => parse(a)?,
        None => PROTOCOL,
    };
    Ok(describe(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_packed_round_trip() {
        let v = parse("1.4.17-beta").unwrap();
        let packed = format!("{:#014x}", v.to_packed());
        assert_eq!(parse(&packed).unwrap(), v);
        assert_eq!(parse(packed.trim_start_matches("0x")).unwrap(), v);
        let d = describe(v);
        assert!(d.contains("version   1.4.17-beta"), "{d}");
        assert!(d.contains("00 01 00 04 04 41"), "{d}");
        assert!(d.contains("revision     17"), "{d}");
        assert!(d.contains("(6 bits: beta)"), "{d}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(parse("0x12"), Err(VersionToolError::Hex(_))));
        assert!(matches!(
            parse("zzzzzzzzzzzz"),
            Err(VersionToolError::Hex(_))
        ));
        // Stage code 63 is not a stage.
        assert!(matches!(
            parse("0x00000000003f"),
            Err(VersionToolError::Text(_))
        ));
        assert!(parse("1.2").is_err());
        assert!(run(None).unwrap().contains(&PROTOCOL.to_string()));
    }
}
