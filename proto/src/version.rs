//! Protocol versions: `major.minor.revision-stage`, packed in 6 bytes.
//!
//! | bits  | field    | range |
//! |-------|----------|-------|
//! | 16    | major    | 0..=65535 |
//! | 16    | minor    | 0..=65535 |
//! | 10    | revision | 0..=1023 |
//! | 6     | stage    | alpha = 0, beta = 1, preview = 2, release = 3 |
//!
//! The text form always carries the stage (`1.4.17-beta`, `2.0.0-release`), so parse and print are
//! exact inverses. Versions order by major, minor, revision, then stage (alpha < beta < preview <
//! release); the packed form orders the same way, as a number and as big-endian bytes.
//! A client and a server are compatible when their majors are equal.

use std::fmt;
use std::str::FromStr;

/// Release stage, the lowest 6 bits of a packed version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// `alpha` (0).
    Alpha = 0,
    /// `beta` (1).
    Beta = 1,
    /// `preview` (2).
    Preview = 2,
    /// `release` (3).
    Release = 3,
}

impl Stage {
    /// The text form (`"beta"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Alpha => "alpha",
            Stage::Beta => "beta",
            Stage::Preview => "preview",
            Stage::Release => "release",
        }
    }

    /// The stage with this 6-bit code; `None` for 4..=63.
    pub const fn from_code(code: u8) -> Option<Stage> {
        match code {
            0 => Some(Stage::Alpha),
            1 => Some(Stage::Beta),
            2 => Some(Stage::Preview),
            3 => Some(Stage::Release),
            _ => None,
        }
    }
}

/// A protocol version. See the module docs for the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    // Field order = comparison order (derived Ord).
    major: u16,
    minor: u16,
    revision: u16,
    stage: Stage,
}

/// The protocol version this build of `lattice-proto` speaks (also exported to TypeScript).
pub const PROTOCOL: Version = Version {
    major: 1,
    minor: 1,
    revision: 0,
    stage: Stage::Alpha,
};

/// Largest revision (10 bits).
pub const MAX_REVISION: u16 = 1023;

/// The longest `Hello.client_version` looked at (the longest valid one, `65535.65535.1023-preview`,
/// has 24 bytes); a longer one is malformed and only its first 64 bytes are quoted back.
pub const MAX_VERSION_TEXT: usize = 64;

/// Why a version was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `major.minor.revision-stage`.
    #[error("version {0:?} is not of the form major.minor.revision-stage (e.g. 1.4.17-beta)")]
    Malformed(String),
    /// A number part is not a plain decimal (digits only, no leading zero).
    #[error("version {text:?}: {part} {value:?} is not a plain decimal number")]
    BadNumber {
        /// The whole input.
        text: String,
        /// `major`, `minor` or `revision`.
        part: &'static str,
        /// The offending part.
        value: String,
    },
    /// A number part is too large for its bits.
    #[error("version {text:?}: {part} {value} is above {max}")]
    OutOfRange {
        /// The whole input.
        text: String,
        /// `major`, `minor` or `revision`.
        part: &'static str,
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Longer than any version can be ([`MAX_VERSION_TEXT`] bytes); not quoted back whole.
    #[error("version of {len} bytes is longer than any version ({max} bytes at most)")]
    TooLong {
        /// The input's length in bytes.
        len: usize,
        /// [`MAX_VERSION_TEXT`].
        max: usize,
    },
    /// The stage is not `alpha`, `beta`, `preview` or `release`.
    #[error("version {text:?}: unknown stage {stage:?} (alpha, beta, preview or release)")]
    UnknownStage {
        /// The whole input.
        text: String,
        /// The offending stage.
        stage: String,
    },
    /// A packed version has a stage code above 3 or bits above 48.
    #[error("packed version {0:#014x} is invalid: {why}", why = bad_packed_why(*.0))]
    BadPacked(u64),
}

/// What is wrong with a packed version [`Version::from_packed`] refused.
fn bad_packed_why(packed: u64) -> String {
    if packed >> 48 != 0 {
        "bits above its 6 bytes are set".into()
    } else {
        format!(
            "its stage code (the low 6 bits) is {}, not 0..=3",
            packed & 0x3f
        )
    }
}

impl Version {
    /// A version from its parts. Fails when `revision` > [`MAX_REVISION`].
    pub fn new(
        major: u16,
        minor: u16,
        revision: u16,
        stage: Stage,
    ) -> Result<Version, VersionError> {
        if revision > MAX_REVISION {
            return Err(VersionError::OutOfRange {
                text: format!("{major}.{minor}.{revision}-{}", stage.as_str()),
                part: "revision",
                value: revision.into(),
                max: MAX_REVISION.into(),
            });
        }
        Ok(Version {
            major,
            minor,
            revision,
            stage,
        })
    }

    /// Major version: clients and servers must agree on it.
    pub const fn major(&self) -> u16 {
        self.major
    }
    /// Minor version.
    pub const fn minor(&self) -> u16 {
        self.minor
    }
    /// Revision (0..=1023).
    pub const fn revision(&self) -> u16 {
        self.revision
    }
    /// Release stage.
    pub const fn stage(&self) -> Stage {
        self.stage
    }

    /// `true` when a peer speaking `other` can talk to us: same major.
    pub const fn compatible_with(&self, other: &Version) -> bool {
        self.major == other.major
    }

    /// The 48-bit packed form in the low bits of a `u64`; orders like the version.
    pub const fn to_packed(self) -> u64 {
        ((self.major as u64) << 32)
            | ((self.minor as u64) << 16)
            | ((self.revision as u64) << 6)
            | self.stage as u64
    }

    /// Inverse of [`to_packed`](Self::to_packed). Fails on bits above 48 or a stage code above 3.
    pub fn from_packed(packed: u64) -> Result<Version, VersionError> {
        let stage =
            Stage::from_code((packed & 0x3f) as u8).ok_or(VersionError::BadPacked(packed))?;
        if packed >> 48 != 0 {
            return Err(VersionError::BadPacked(packed));
        }
        Ok(Version {
            major: (packed >> 32) as u16,
            minor: (packed >> 16) as u16,
            revision: ((packed >> 6) & 0x3ff) as u16,
            stage,
        })
    }

    /// The 6 packed bytes, big-endian (so byte order = version order).
    pub const fn to_bytes(self) -> [u8; 6] {
        let b = self.to_packed().to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// Inverse of [`to_bytes`](Self::to_bytes). Fails on a stage code above 3.
    pub fn from_bytes(bytes: [u8; 6]) -> Result<Version, VersionError> {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&bytes);
        Version::from_packed(u64::from_be_bytes(b))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}-{}",
            self.major,
            self.minor,
            self.revision,
            self.stage.as_str()
        )
    }
}

impl FromStr for Version {
    type Err = VersionError;

    /// Parses `major.minor.revision-stage`, e.g. `1.4.17-beta`. Cost: no allocation on success.
    fn from_str(text: &str) -> Result<Version, VersionError> {
        let malformed = || VersionError::Malformed(text.to_string());
        let (numbers, stage) = text.split_once('-').ok_or_else(malformed)?;
        let mut parts = numbers.split('.');
        let (Some(major), Some(minor), Some(revision), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        let number = |part: &'static str, value: &str, max: u64| -> Result<u64, VersionError> {
            let plain = !value.is_empty()
                && value.len() <= 20
                && value.bytes().all(|b| b.is_ascii_digit())
                && (value == "0" || !value.starts_with('0'));
            let n: u64 = if plain { value.parse().ok() } else { None }.ok_or_else(|| {
                VersionError::BadNumber {
                    text: text.to_string(),
                    part,
                    value: value.to_string(),
                }
            })?;
            if n > max {
                return Err(VersionError::OutOfRange {
                    text: text.to_string(),
                    part,
                    value: n,
                    max,
                });
            }
            Ok(n)
        };
        let major = number("major", major, u16::MAX.into())? as u16;
        let minor = number("minor", minor, u16::MAX.into())? as u16;
        let revision = number("revision", revision, MAX_REVISION.into())? as u16;
        let stage = match stage {
            "alpha" => Stage::Alpha,
            "beta" => Stage::Beta,
            "preview" => Stage::Preview,
            "release" => Stage::Release,
            other => {
                return Err(VersionError::UnknownStage {
                    text: text.to_string(),
                    stage: other.to_string(),
                })
            }
        };
        Ok(Version {
            major,
            minor,
            revision,
            stage,
        })
    }
}

/// Why a `Hello` was refused; the `Display` text is meant for `Error.message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloRejection {
    /// `client_version` does not parse.
    #[error("client version {text:?} is malformed ({source}); server speaks {server}")]
    Malformed {
        /// What the client sent.
        text: String,
        /// Why it does not parse.
        source: VersionError,
        /// Our version.
        server: Version,
    },
    /// The client's major version is not ours.
    #[error("client version {client} is not supported: server speaks {server} (major {major} only)", major = server.major)]
    Incompatible {
        /// The client's version.
        client: Version,
        /// Our version.
        server: Version,
    },
}

impl HelloRejection {
    /// The `Error.code` to answer with: always [`VERSION_MISMATCH`](crate::error_code::VERSION_MISMATCH).
    pub const fn error_code(&self) -> u32 {
        crate::error_code::VERSION_MISMATCH
    }
}

/// Checks `Hello.client_version` against the server's version: accepted when it parses and has
/// the same major. On `Err`, answer `Error{code: rejection.error_code(), message: rejection.to_string()}`
/// with the Hello's request id, then close. Cost: one parse, no allocation on success.
pub fn check_hello(client_version: &str, server: Version) -> Result<Version, HelloRejection> {
    if client_version.len() > MAX_VERSION_TEXT {
        // Quoted back (and logged) by its first bytes only: the answer must not grow with it.
        let mut cut = MAX_VERSION_TEXT;
        while !client_version.is_char_boundary(cut) {
            cut -= 1;
        }
        return Err(HelloRejection::Malformed {
            text: format!("{}…", &client_version[..cut]),
            source: VersionError::TooLong {
                len: client_version.len(),
                max: MAX_VERSION_TEXT,
            },
            server,
        });
    }
    let client: Version = client_version
        .parse()
        .map_err(|source| HelloRejection::Malformed {
            text: client_version.to_string(),
            source,
            server,
        })?;
    if client.compatible_with(&server) {
        Ok(client)
    } else {
        Err(HelloRejection::Incompatible { client, server })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parse_print_round_trip() {
        for s in [
            "1.4.17-beta",
            "0.0.0-alpha",
            "65535.65535.1023-release",
            "2.10.0-preview",
            "1.0.0-alpha",
        ] {
            let ver = v(s);
            assert_eq!(ver.to_string(), s);
            assert_eq!(Version::from_packed(ver.to_packed()), Ok(ver));
            assert_eq!(Version::from_bytes(ver.to_bytes()), Ok(ver));
        }
        let ver = v("1.4.17-beta");
        assert_eq!(
            (ver.major(), ver.minor(), ver.revision(), ver.stage()),
            (1, 4, 17, Stage::Beta)
        );
        assert_eq!(ver.to_packed(), (1 << 32) | (4 << 16) | (17 << 6) | 1);
        assert_eq!(ver.to_bytes(), [0, 1, 0, 4, 0x04, 0x41]);
        assert_eq!(PROTOCOL.to_string(), "1.1.0-alpha");
    }

    #[test]
    fn ordering_is_total_and_matches_packed_and_bytes() {
        let sorted = [
            "0.0.0-alpha",
            "0.0.0-release",
            "0.0.1-alpha",
            "0.1.0-alpha",
            "1.4.17-alpha",
            "1.4.17-beta",
            "1.4.17-preview",
            "1.4.17-release",
            "1.4.18-alpha",
            "1.5.0-alpha",
            "1.10.0-alpha",
            "2.0.0-alpha",
            "65535.0.0-alpha",
        ];
        let vs: Vec<Version> = sorted.iter().map(|s| v(s)).collect();
        for (i, a) in vs.iter().enumerate() {
            for (j, b) in vs.iter().enumerate() {
                assert_eq!(a.cmp(b), i.cmp(&j), "{a} vs {b}");
                assert_eq!(a.to_packed().cmp(&b.to_packed()), i.cmp(&j));
                assert_eq!(a.to_bytes().cmp(&b.to_bytes()), i.cmp(&j));
            }
        }
    }

    #[test]
    fn an_overlong_client_version_is_quoted_by_its_first_bytes_only() {
        let server = v("1.1.0-alpha");
        let long = format!("1.1.0-alpha{}", "é".repeat(500_000));
        let e = check_hello(&long, server).unwrap_err();
        let msg = e.to_string();
        assert!(msg.len() < 300, "{} bytes", msg.len());
        assert!(msg.contains("1000011 bytes"), "{msg}");
        assert_eq!(e.error_code(), crate::error_code::VERSION_MISMATCH);
        // The longest valid version is well inside the bound.
        assert!(check_hello("1.65535.1023-preview", server).is_ok());
        assert!("65535.65535.1023-preview".len() <= MAX_VERSION_TEXT);
    }

    #[test]
    fn hello_check_accepts_same_major_only() {
        let server = v("1.4.0-release");
        assert_eq!(check_hello("1.0.0-alpha", server), Ok(v("1.0.0-alpha")));
        assert_eq!(check_hello("1.9.3-beta", server), Ok(v("1.9.3-beta")));
        let err = check_hello("2.0.0-alpha", server).unwrap_err();
        assert_eq!(err.error_code(), crate::error_code::VERSION_MISMATCH);
        assert_eq!(
            err.to_string(),
            "client version 2.0.0-alpha is not supported: server speaks 1.4.0-release (major 1 only)"
        );
        let err = check_hello("1.0", server).unwrap_err();
        assert!(matches!(err, HelloRejection::Malformed { .. }));
        assert!(err.to_string().contains("\"1.0\" is malformed"), "{err}");
        assert_eq!(err.error_code(), crate::error_code::VERSION_MISMATCH);
    }

    #[test]
    fn compatibility_is_same_major() {
        assert!(v("1.4.17-beta").compatible_with(&v("1.0.0-alpha")));
        assert!(v("1.0.0-release").compatible_with(&v("1.99.1023-alpha")));
        assert!(!v("2.0.0-release").compatible_with(&v("1.9.9-release")));
    }

    #[test]
    fn malformed_strings_are_rejected() {
        for s in [
            "",
            "1",
            "1.4",
            "1.4.17",
            "1.4-beta",
            "1.4.17.2-beta",
            "1..17-beta",
            "-beta",
            "a.4.17-beta",
            "1.4.x-beta",
            "+1.4.17-beta",
            "1.4.17 -beta",
            " 1.4.17-beta",
            "01.4.17-beta",
            "1.4.017-beta",
            "99999999999999999999999.0.0-beta",
        ] {
            let err = s.parse::<Version>().expect_err(s);
            assert!(
                matches!(
                    err,
                    VersionError::Malformed(_)
                        | VersionError::BadNumber { .. }
                        | VersionError::OutOfRange { .. }
                ),
                "{s}: {err:?}"
            );
        }
        assert!(matches!(
            "1.4.17-gamma".parse::<Version>(),
            Err(VersionError::UnknownStage { .. })
        ));
        assert!(matches!(
            "1.4.17-".parse::<Version>(),
            Err(VersionError::UnknownStage { .. })
        ));
        assert!(matches!(
            "1.4.17-Beta".parse::<Version>(),
            Err(VersionError::UnknownStage { .. })
        ));
        assert!(matches!(
            "1.4.1024-beta".parse::<Version>(),
            Err(VersionError::OutOfRange {
                part: "revision",
                value: 1024,
                ..
            })
        ));
        assert!(matches!(
            "65536.0.0-beta".parse::<Version>(),
            Err(VersionError::OutOfRange { part: "major", .. })
        ));
        assert!(matches!(
            "1.4.17-beta-2".parse::<Version>(),
            Err(VersionError::UnknownStage { .. })
        ));
        assert!(Version::new(1, 0, 1024, Stage::Beta).is_err());
        assert_eq!(
            Version::from_packed(17).unwrap_err().to_string(),
            "packed version 0x000000000011 is invalid: its stage code (the low 6 bits) is 17, not 0..=3"
        );
        assert_eq!(
            Version::from_packed(1 << 48).unwrap_err().to_string(),
            "packed version 0x1000000000000 is invalid: bits above its 6 bytes are set"
        );
        assert!(Version::from_bytes([0, 1, 0, 0, 0, 0x3f]).is_err());
    }
}
