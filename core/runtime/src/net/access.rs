//! IP rules: allow and deny lists of CIDR blocks (IPv4 and IPv6) and an allow-list-only mode,
//! checked when a connection is accepted.
//!
//! A rule set is immutable once built ([`AccessRules`]); changing the rules builds a new set and
//! publishes it through a [`super::switch::Switch`]: acceptor threads pay one atomic load per
//! connection while nothing changes. Shards never read the rules on their request path: closing the
//! sessions a new set refuses is a control command carrying the set.
//!
//! Semantics, in order: an address in an **allow** block is admitted; else an address in a
//! **deny** block is refused; else, in **allow-only** mode, the address is refused; else admitted.
//! IPv4 addresses and IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) match IPv4 blocks alike, and
//! IPv6 blocks written inside `::ffff:0:0/96`; a wider IPv6 block (`::/0`, `::/1`) matches IPv6
//! addresses only, so denying `::/0` turns IPv6 clients away, not IPv4 ones.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A CIDR block, IPv4 or IPv6 (`10.0.0.0/8`, `::1/128`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR block did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad CIDR block {text:?}: {why}")]
pub struct CidrError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError {
            text: text.to_string(),
            why,
        };
        let t = text.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let p: u8 = p
                    .parse()
                    .map_err(|_| err("prefix length is not a number"))?;
                if p > max {
                    return Err(err("prefix length too long for the address family"));
                }
                p
            }
        };
        let c = Cidr { addr, prefix };
        if c.range().0 != as_v6(addr) {
            return Err(err(
                "host bits set after the prefix (write the network address)",
            ));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// The block as an inclusive range of IPv6 values (IPv4 blocks as IPv4-mapped addresses).
    fn range(&self) -> (u128, u128) {
        let (base, bits) = match self.addr {
            IpAddr::V4(_) => (as_v6(self.addr), 96 + u32::from(self.prefix)),
            IpAddr::V6(_) => (as_v6(self.addr), u32::from(self.prefix)),
        };
        let host = if bits >= 128 { 0 } else { u128::MAX >> bits };
        (base & !host, base | host)
    }

    /// True when `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.spans()
            .into_iter()
            .flatten()
            .any(|(lo, hi)| (lo..=hi).contains(&as_v6(ip)))
    }

    /// The ranges of addresses the block matches: its range, less the IPv4-mapped range when it
    /// is an IPv6 block wider than that range (IPv4 clients match IPv4 blocks, and IPv6 blocks
    /// written inside `::ffff:0:0/96`).
    fn spans(&self) -> [Option<(u128, u128)>; 2] {
        let (lo, hi) = self.range();
        let wider = self.addr.is_ipv6() && lo <= MAPPED.0 && hi >= MAPPED.1 && (lo, hi) != MAPPED;
        if !wider {
            return [Some((lo, hi)), None];
        }
        [
            (lo < MAPPED.0).then(|| (lo, MAPPED.0 - 1)),
            (hi > MAPPED.1).then(|| (MAPPED.1 + 1, hi)),
        ]
    }
}

/// The IPv4-mapped IPv6 range, `::ffff:0:0/96`, as 128-bit values.
const MAPPED: (u128, u128) = (0xffff_0000_0000, 0xffff_ffff_ffff);

/// An address as a 128-bit value; IPv4 as IPv4-mapped IPv6.
fn as_v6(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A list of blocks as sorted inclusive ranges, for O(log n) lookups.
#[derive(Debug, Clone, Default)]
struct Ranges {
    /// (lo, hi, index of the block in the list as given), sorted by `lo`, not merged (so a hit
    /// can name its block).
    ranges: Vec<(u128, u128, usize)>,
    /// Largest `hi` of `ranges[..=i]`: lets the lookup stop early.
    max_hi: Vec<u128>,
}

impl Ranges {
    fn new(blocks: &[Cidr]) -> Ranges {
        let mut ranges: Vec<(u128, u128, usize)> = blocks
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                b.spans()
                    .into_iter()
                    .flatten()
                    .map(move |(lo, hi)| (lo, hi, i))
            })
            .collect();
        ranges.sort_unstable();
        let mut max_hi = Vec::with_capacity(ranges.len());
        let mut m = 0;
        for r in &ranges {
            m = m.max(r.1);
            max_hi.push(m);
        }
        Ranges { ranges, max_hi }
    }

    /// The index of a block containing `v` (the one with the greatest start at or below `v`
    /// that still covers it, searching back while some earlier block could).
    fn find(&self, v: u128) -> Option<usize> {
        let mut i = self.ranges.partition_point(|r| r.0 <= v);
        while i > 0 {
            i -= 1;
            if self.max_hi[i] < v {
                return None;
            }
            if self.ranges[i].1 >= v {
                return Some(self.ranges[i].2);
            }
        }
        None
    }
}

/// What the rules say about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In an allow block (exempt from the per-address connection rate limit too).
    Allowed(Cidr),
    /// In no block, and not in allow-only mode.
    Admitted,
    /// In a deny block (and no allow block).
    Denied(Cidr),
    /// Allow-only mode and in no allow block.
    NotAllowed,
}

impl Verdict {
    /// True when a connection from the address is refused.
    pub fn refused(&self) -> bool {
        matches!(self, Verdict::Denied(_) | Verdict::NotAllowed)
    }

    /// Why it is refused, for the log and the close reason (`None` when admitted).
    pub fn reason(&self) -> Option<String> {
        match self {
            Verdict::Denied(c) => Some(format!("ip rule: {c} is denied")),
            Verdict::NotAllowed => Some("ip rule: not in the allow list (allow_only)".into()),
            _ => None,
        }
    }
}

/// `[access]` section: the rules at start (the admin API replaces them live).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// CIDR blocks always admitted.
    pub allow: Vec<String>,
    /// CIDR blocks refused (unless also allowed).
    pub deny: Vec<String>,
    /// Refuse every address outside `allow`.
    pub allow_only: bool,
}

/// An immutable rule set. Cheap to share (`Arc`); lookups take O(log n).
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    allow_only: bool,
    allow_ranges: Ranges,
    deny_ranges: Ranges,
}

impl AccessRules {
    /// Builds a set from blocks. Fails on the first block that does not parse, naming it.
    pub fn new(cfg: &AccessConfig) -> Result<AccessRules, CidrError> {
        let parse = |list: &[String]| {
            list.iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<Cidr>, _>>()
        };
        let (allow, deny) = (parse(&cfg.allow)?, parse(&cfg.deny)?);
        Ok(AccessRules {
            allow_ranges: Ranges::new(&allow),
            deny_ranges: Ranges::new(&deny),
            allow,
            deny,
            allow_only: cfg.allow_only,
        })
    }

    /// The rules as configuration (blocks in canonical form).
    pub fn config(&self) -> AccessConfig {
        AccessConfig {
            allow: self.allow.iter().map(Cidr::to_string).collect(),
            deny: self.deny.iter().map(Cidr::to_string).collect(),
            allow_only: self.allow_only,
        }
    }

    /// The verdict for `ip`. Cost: two binary searches.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let v = as_v6(canonical(ip));
        if let Some(i) = self.allow_ranges.find(v) {
            return Verdict::Allowed(self.allow[i]);
        }
        if let Some(i) = self.deny_ranges.find(v) {
            return Verdict::Denied(self.deny[i]);
        }
        if self.allow_only {
            Verdict::NotAllowed
        } else {
            Verdict::Admitted
        }
    }

    /// True when the set admits everything (no block, not allow-only): the acceptor skips it.
    pub fn is_open(&self) -> bool {
        self.deny.is_empty() && !self.allow_only && self.allow.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str], allow_only: bool) -> AccessRules {
        AccessRules::new(&AccessConfig {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            allow_only,
        })
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_both_families_and_refuses_bad_blocks() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        assert_eq!(
            "127.0.0.2".parse::<Cidr>().unwrap().to_string(),
            "127.0.0.2/32"
        );
        for (bad, why) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "too long"),
            ("fe80::/200", "too long"),
            ("fe80::/300", "not a number"),
            ("banana", "not an IP"),
            ("1.2.3.4/x", "not a number"),
        ] {
            let e = bad.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn allow_wins_over_deny_and_allow_only_refuses_the_rest() {
        let r = rules(
            &["10.1.2.3", "2001:db8::/32"],
            &["10.0.0.0/8", "::1"],
            false,
        );
        assert_eq!(
            r.check(ip("10.1.2.3")),
            Verdict::Allowed("10.1.2.3/32".parse().unwrap())
        );
        assert_eq!(
            r.check(ip("10.9.9.9")),
            Verdict::Denied("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            r.check(ip("::ffff:10.9.9.9")),
            Verdict::Denied("10.0.0.0/8".parse().unwrap()),
            "mapped v4"
        );
        assert_eq!(
            r.check(ip("::1")),
            Verdict::Denied("::1/128".parse().unwrap())
        );
        assert_eq!(r.check(ip("11.0.0.1")), Verdict::Admitted);
        assert!(matches!(r.check(ip("2001:db8::5")), Verdict::Allowed(_)));
        let only = rules(&["127.0.0.2"], &[], true);
        assert!(matches!(only.check(ip("127.0.0.2")), Verdict::Allowed(_)));
        assert_eq!(only.check(ip("127.0.0.3")), Verdict::NotAllowed);
        assert!(only.check(ip("::1")).refused());
        assert!(rules(&[], &[], false).is_open());
    }

    #[test]
    fn lookups_agree_with_a_linear_scan() {
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let blocks: Vec<Cidr> = (0..20)
                .map(|_| {
                    let prefix = 8 + (rnd() % 25) as u8;
                    let a = (rnd() as u32 & 0xff3f_ffff) & (u32::MAX << (32 - u32::from(prefix)));
                    format!("{}/{prefix}", std::net::Ipv4Addr::from(a))
                        .parse()
                        .unwrap()
                })
                .collect();
            let ranges = Ranges::new(&blocks);
            for _ in 0..200 {
                let probe = IpAddr::V4(std::net::Ipv4Addr::from(rnd() as u32 & 0xff3f_ffff));
                let hit = ranges.find(as_v6(probe)).map(|i| blocks[i].contains(probe));
                let any = blocks.iter().any(|b| b.contains(probe));
                assert_eq!(hit.unwrap_or(false), any, "{probe} in {blocks:?}");
                assert_ne!(
                    hit,
                    Some(false),
                    "a hit names a block that contains the address"
                );
            }
        }
    }

    #[test]
    fn config_round_trips_in_canonical_form() {
        let r = rules(&["127.0.0.2"], &["::1", "10.0.0.0/8"], true);
        assert_eq!(
            r.config(),
            AccessConfig {
                allow: vec!["127.0.0.2/32".into()],
                deny: vec!["::1/128".into(), "10.0.0.0/8".into()],
                allow_only: true
            }
        );
    }
}

#[cfg(test)]
mod mapped_tests {
    use super::*;

    #[test]
    fn a_mapped_block_matches_the_ipv4_client_it_names() {
        let r = AccessRules::new(&AccessConfig {
            deny: vec!["::ffff:127.0.0.9/128".into(), "fe80::/10".into()],
            ..Default::default()
        })
        .unwrap();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(
            matches!(r.check(ip), Verdict::Denied(_)),
            "{:?}",
            r.check(ip)
        );
    }

    #[test]
    fn a_wide_ipv6_block_matches_ipv6_clients_only() {
        let v4: IpAddr = "127.0.0.9".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        for wide in ["::/0", "::/1", "::/64"] {
            let r = AccessRules::new(&AccessConfig {
                deny: vec![wide.into()],
                ..Default::default()
            })
            .unwrap();
            assert_eq!(r.check(v4), Verdict::Admitted, "{wide}");
            assert_eq!(r.check(mapped), Verdict::Admitted, "{wide}");
            let c: Cidr = wide.parse().unwrap();
            assert!(!c.contains(v4), "{wide}");
            assert!(c.contains("::1".parse().unwrap()), "{wide}");
            assert!(c.contains("::fffe:0:1".parse().unwrap()), "{wide}");
        }
        let r = AccessRules::new(&AccessConfig {
            deny: vec!["::/0".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(r.check("2001:db8::1".parse().unwrap()).refused());
        assert!(r.check("::1".parse().unwrap()).refused());
        assert!(
            r.check("::1:0:0:1".parse().unwrap()).refused(),
            "above the mapped range"
        );
        // The mapped range itself names every IPv4 client.
        let all_v4 = AccessRules::new(&AccessConfig {
            deny: vec!["::ffff:0:0/96".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(all_v4.check(v4).refused());
        assert!(!all_v4.check("::1".parse().unwrap()).refused());
    }
}
