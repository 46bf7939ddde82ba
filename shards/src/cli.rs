//! Command-line parsing for the `lattice` binary (no dependencies: the grammar is tiny).

use std::path::PathBuf;

use lattice_runtime::config::key_docs;

use crate::config::schema;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `lattice run [--config FILE] [--section.key value ...]`.
    Run {
        /// `--config FILE`.
        config: Option<PathBuf>,
        /// `--section.key value` pairs.
        overrides: Vec<(String, String)>,
    },
    /// `lattice config …`: print the merged configuration and exit.
    ShowConfig {
        /// `--config FILE`.
        config: Option<PathBuf>,
        /// Overrides.
        overrides: Vec<(String, String)>,
    },
    /// `lattice tool migrate --print …`: print the schema SQL for operators.
    MigratePrint {
        /// `--config FILE`.
        config: Option<PathBuf>,
        /// Overrides.
        overrides: Vec<(String, String)>,
    },
    /// `lattice config --defaults`: print the documented defaults of every section.
    Defaults,
    /// `lattice help`, `--help`, `-h`.
    Help,
    /// `lattice version`, `--version`.
    Version,
}

/// Parses `args` (without the program name). Errors are one line for the user.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::Help);
    };
    match first.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "version" | "--version" | "-V" => Ok(Command::Version),
        "config" if args.get(1).map(String::as_str) == Some("--defaults") => Ok(Command::Defaults),
        "run" | "config" => {
            let (config, overrides) = parse_options(&args[1..])?;
            Ok(if first == "run" {
                Command::Run { config, overrides }
            } else {
                Command::ShowConfig { config, overrides }
            })
        }
        "tool" => match (
            args.get(1).map(String::as_str),
            args.get(2).map(String::as_str),
        ) {
            (Some("migrate"), Some("--print")) => {
                let (config, overrides) = parse_options(&args[3..])?;
                Ok(Command::MigratePrint { config, overrides })
            }
            _ => Err(
                "usage: lattice tool migrate --print [--config FILE] [--section.key VALUE ...]"
                    .into(),
            ),
        },
        other => Err(format!("unknown command `{other}` (try `lattice --help`)")),
    }
}

type Options = (Option<PathBuf>, Vec<(String, String)>);

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut config = None;
    let mut overrides = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--help" || a == "-h" {
            return Err("use `lattice --help`".into());
        }
        let Some(key) = a.strip_prefix("--") else {
            return Err(format!(
                "unexpected argument `{a}` (options look like --section.key value)"
            ));
        };
        let (key, value) = match key.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| format!("option --{key} needs a value"))?;
                (key.to_string(), v.clone())
            }
        };
        if key == "config" {
            config = Some(PathBuf::from(value));
        } else if key.contains('.') {
            overrides.push((key, value));
        } else {
            return Err(format!(
                "unknown option --{key} (config keys look like --section.key)"
            ));
        }
    }
    Ok((config, overrides))
}

/// The `--help` text: usage, then every config key with its default and meaning.
pub fn help() -> String {
    let mut s = String::from(
        "lattice — sharded thread-per-core game server\n\n\
USAGE:\n  lattice run [--config FILE] [--section.key VALUE ...]   start all roles in one process\n  \
lattice config [--config FILE] [--section.key VALUE ...] print the merged configuration\n  \
lattice config --defaults                                print every section's documented defaults\n  \
lattice tool migrate --print [--config FILE] [...]         print the schema SQL (for operators)\n  \
lattice --help | --version\n\n\
Every key below can be set in the TOML file given by --config, as --section.key VALUE (or\n\
--section.key=VALUE) on the command line, or as the environment variable LATTICE_SECTION__KEY.\n\
Precedence: command line > environment > config file > defaults (`lattice config --defaults`).\n\
Bad configuration prints one line naming the key and exits with code 2.\n\n\
SIGTERM/SIGINT: stop accepting, flush in-flight replies (shutdown.drain_timeout_ms), close, exit 0.\n\n\
OPTIONS:\n",
    );
    let mut section = String::new();
    for d in key_docs(&schema()) {
        let sec = d.key.split('.').next().unwrap_or_default();
        if sec != section {
            s.push_str(&format!("\n  [{sec}]\n"));
            section = sec.to_string();
        }
        s.push_str(&format!(
            "  --{:<28} default {}\n      {}\n",
            d.key, d.default, d.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_run_with_overrides() {
        let c = parse(&v(&[
            "run",
            "--config",
            "x.toml",
            "--net.listen",
            "1.2.3.4:5",
            "--log.format=json",
        ]))
        .unwrap();
        assert_eq!(
            c,
            Command::Run {
                config: Some("x.toml".into()),
                overrides: vec![
                    ("net.listen".into(), "1.2.3.4:5".into()),
                    ("log.format".into(), "json".into())
                ],
            }
        );
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(parse(&v(&["fly"])).is_err());
        assert!(parse(&v(&["run", "--net.listen"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&v(&["run", "stray"])).is_err());
        assert!(parse(&v(&["run", "--verbose", "1"])).is_err());
        assert_eq!(parse(&v(&[])).unwrap(), Command::Help);
    }

    #[test]
    fn help_lists_every_key() {
        let h = help();
        for d in key_docs(&schema()) {
            assert!(
                h.contains(&format!("--{}", d.key)),
                "{} missing from --help",
                d.key
            );
        }
    }
}
