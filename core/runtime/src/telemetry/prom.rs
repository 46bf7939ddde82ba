//! The one Prometheus text writer (exposition format 0.0.4).
//!
//! Every family the server exports goes through [`Writer`]: the runtime's per-shard counters, the
//! server's gate and service counters, the storage snapshot and the allocator monitor. Names, the
//! `# HELP` / `# TYPE` lines, label escaping and number formatting are therefore the same
//! everywhere, and `promtool check metrics` checks one implementation.

use std::fmt::Write as _;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets at restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Quantiles plus `_sum` and `_count`.
    Summary,
    /// Cumulative `_bucket{le=…}` plus `_sum` and `_count`.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample value: integers print exactly, floats in Rust's shortest round-trip form.
pub trait SampleValue {
    /// Appends the value's text.
    fn write_to(&self, out: &mut String);
}

impl SampleValue for u64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for i64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl SampleValue for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// Appends families to a `String`. Cheap to create; holds no state but the output.
pub struct Writer<'a> {
    out: &'a mut String,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        Writer { out }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines. `name` must be a valid metric name
    /// (`[a-zA-Z_:][a-zA-Z0-9_:]*`); `help` is written on one line.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        let _ = write!(self.out, "# HELP {name} ");
        escape_help(help, self.out);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample line: `name{labels} value`. `name` is the family name, or for summaries and
    /// histograms the family name plus `_sum`, `_count` or `_bucket`.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl SampleValue,
    ) -> &mut Self {
        debug_assert!(valid_name(name), "bad metric name {name:?}");
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(valid_name(k) && !k.contains(':'), "bad label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(self.out);
        self.out.push('\n');
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        value: impl SampleValue,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Declares a struct of per-shard counters and gauges (relaxed atomics on their own cache lines)
/// and its rendering through [`Writer`], one sample per shard labelled `shard="N"`.
///
/// ```ignore
/// lattice_runtime::shard_counters! {
///     /// What these count.
///     pub struct GateMetrics("lattice") {
///         unknown_opcode_total: Counter, "Frames with an unknown opcode.";
///     }
/// }
/// ```
#[macro_export]
macro_rules! shard_counters {
    ($(#[$meta:meta])* pub struct $name:ident($prefix:literal) {
        $( $field:ident : $kind:ident, $help:literal; )*
    }) => {
        $(#[$meta])*
        #[derive(Default)]
        #[repr(align(128))]
        pub struct $name {
            $( #[doc = $help] pub $field: ::std::sync::atomic::AtomicU64, )*
        }

        impl $name {
            /// Renders every field for every shard (index = shard id).
            pub fn render(shards: &[$name], w: &mut $crate::telemetry::prom::Writer<'_>) {
                $(
                    let name = concat!($prefix, "_", stringify!($field));
                    w.family(name, $crate::telemetry::prom::Kind::$kind, $help);
                    for (i, s) in shards.iter().enumerate() {
                        let shard = i.to_string();
                        w.sample(name, &[("shard", &shard)],
                            s.$field.load(::std::sync::atomic::Ordering::Relaxed));
                    }
                )*
            }

            /// Adds `n` to a counter (relaxed).
            #[inline]
            pub fn add(counter: &::std::sync::atomic::AtomicU64, n: u64) {
                counter.fetch_add(n, ::std::sync::atomic::Ordering::Relaxed);
            }

            /// Sets a gauge (relaxed).
            #[inline]
            pub fn set(gauge: &::std::sync::atomic::AtomicU64, v: u64) {
                gauge.store(v, ::std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut s = String::new();
        let mut w = Writer::new(&mut s);
        w.family("lattice_x_total", Kind::Counter, "Things.\nMore")
            .sample(
                "lattice_x_total",
                &[("shard", "0"), ("name", "a\"b\\c\nd")],
                3u64,
            );
        w.single("lattice_y", Kind::Gauge, "Y.", 0.25f64);
        w.family("lattice_z_seconds", Kind::Summary, "Z.")
            .sample("lattice_z_seconds", &[("quantile", "0.5")], f64::INFINITY)
            .sample("lattice_z_seconds_sum", &[], 1.5f64)
            .sample("lattice_z_seconds_count", &[], 2u64);
        assert_eq!(
            s,
            "# HELP lattice_x_total Things.\\nMore\n# TYPE lattice_x_total counter\n\
             lattice_x_total{shard=\"0\",name=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP lattice_y Y.\n# TYPE lattice_y gauge\nlattice_y 0.25\n\
             # HELP lattice_z_seconds Z.\n# TYPE lattice_z_seconds summary\n\
             lattice_z_seconds{quantile=\"0.5\"} +Inf\nlattice_z_seconds_sum 1.5\nlattice_z_seconds_count 2\n"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("lattice_a:b_1"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }
}
