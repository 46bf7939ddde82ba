//! The `lattice` command line (clap): `run`, `config`, `tool …`, `admin …`, `completions`.
//!
//! Configuration keys are not clap arguments: they come from the schema (every section's documented
//! defaults), so `--section.key VALUE` is collected as trailing words and checked by the config
//! loader, which names a bad key. The key list is appended to `--help` from the same schema.
//!
//! A new subcommand is one variant here and one file under `tools/` for its work.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lattice_runtime::config::key_docs;

use crate::config::schema;

/// The `lattice` binary's arguments.
#[derive(Parser, Debug)]
#[command(
    name = "lattice",
    about = "Lattice — sharded thread-per-core game server",
    long_about = "Lattice — sharded thread-per-core game server.\n\n\
        `lattice run` starts every role in one process with the embedded store; no option is needed.",
    arg_required_else_help = true,
    disable_version_flag = true
)]
pub struct Cli {
    /// Print the version, protocol version and allocator, then exit.
    #[arg(short = 'V', long, global = false)]
    pub version: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server (every role in one process, the embedded store, defaults for everything).
    ///
    /// SIGTERM/SIGINT stop accepting, flush in-flight replies (shutdown.drain_timeout_ms), close
    /// every session with a logged reason, flush storage, exit 0.
    Run(ConfigArgs),
    /// Print the merged configuration, or with --defaults every section's documented defaults.
    Config {
        /// Print the documented defaults of every section instead of the merged configuration.
        #[arg(long)]
        defaults: bool,
        /// Configuration sources.
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Operator tools.
    #[command(subcommand)]
    Tool(Tool),
    /// Call the admin API of a running server: sessions, close, ip-rules, reload.
    ///
    /// Reads the address and the bearer token from the configuration (admin.listen, admin.token or
    /// the data directory's admin.token file) unless --addr / --token / --token-file are given.
    Admin(crate::tools::admin::AdminArgs),
    /// Print a shell completion script.
    ///
    /// Example: `lattice completions bash > /etc/bash_completion.d/lattice`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// `lattice tool …`.
#[derive(Subcommand, Debug)]
pub enum Tool {
    /// Print the SQL of the storage schema, for operators who apply migrations by hand.
    Migrate {
        /// Print the SQL (required: this tool never changes a database).
        #[arg(long, required = true)]
        print: bool,
        /// Configuration sources (the storage section decides the dialect and database name).
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// List the lattice processes running on this machine: pid, role, listening ports, uptime,
    /// resident memory (found by scanning /proc/*/exe).
    Ps,
    /// Print the protocol version (6 bytes) packed and unpacked: this build's, or VERSION's.
    ///
    /// VERSION is a text version (1.4.17-beta) or a packed one (12 hex digits, e.g.
    /// 0x000100040441); the tool prints the other forms and whether this build is compatible.
    Version {
        /// A version to convert instead of this build's.
        version: Option<String>,
    },
    /// Write a self-signed development certificate and key (DIR/cert.pem, DIR/key.pem) for
    /// localhost, 127.0.0.1 and ::1; use them with --tls.cert and --tls.key.
    GenCert {
        /// Directory to write into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Machine-id leases in the storage database: list them, take one for a node, free one.
    #[command(subcommand)]
    MachineId(MachineIdCmd),
    /// Back up the storage database into a file named <database>-<YYYYmmdd-HHMMSS> (UTC):
    /// SQLite's online backup (an SQLite file), or mariadb-dump/mysqldump (SQL text). Safe while
    /// the server runs. Prints the file's path.
    DbBackup {
        /// Directory of the backup file (default: storage.data_dir).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Configuration sources (the storage section names the database).
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Restore a backup written by `db-backup` into the configured database. Stop the server
    /// first; marks still in its journal are written on top at its next start.
    DbRestore {
        /// The backup file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Configuration sources (the storage section names the database).
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Print random passwords (letters, digits and symbols, from the OS's randomness).
    GenPassword {
        /// Characters per password (8..=256).
        #[arg(long, default_value_t = 20)]
        length: usize,
        /// How many passwords, one per line.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Icons: store the icon folder (PNG files and icons.txt) in the database.
    #[command(subcommand)]
    Icons(IconsCmd),
}

/// `lattice tool machine-id …`. Options go before the `--section.key` overrides.
#[derive(Subcommand, Debug)]
pub enum MachineIdCmd {
    /// List every machine id ever leased: holder, expiry, last id timestamp.
    Show {
        /// Configuration sources.
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Take a lease for a node (it keeps it when it starts under that name), and print the id.
    Request {
        /// Node name (default: cluster.node_id, else center.node, else the host name).
        #[arg(long)]
        node: Option<String>,
        /// This id, 0-127 (default: the node's previous id, else the lowest free one).
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=127))]
        id: Option<u32>,
        /// Lease duration in ms (default: center.lease_ttl_ms).
        #[arg(long)]
        ttl_ms: Option<u64>,
        /// Configuration sources.
        #[command(flatten)]
        args: ConfigArgs,
    },
    /// Free a machine id (its last id timestamp is kept). Refuses a live lease without --force.
    Release {
        /// The machine id, 0-127.
        #[arg(long, value_parser = clap::value_parser!(u32).range(0..=127))]
        id: u32,
        /// Free it even though its lease has not expired (only when its holder is gone; refused
        /// when the holder is this node and its server runs on this data directory).
        #[arg(long)]
        force: bool,
        /// Configuration sources.
        #[command(flatten)]
        args: ConfigArgs,
    },
}

/// `lattice tool icons …`.
#[derive(Subcommand, Debug)]
pub enum IconsCmd {
    /// Store every icon of DIR (icons.txt + NAME.png) in the database (id, name, description,
    /// PNG bytes, SHA-256), replacing what was there; icons no longer listed are deleted.
    Import {
        /// The icon folder.
        #[arg(long, value_name = "DIR", default_value = "proto/icons")]
        dir: PathBuf,
        /// Configuration sources.
        #[command(flatten)]
        args: ConfigArgs,
    },
}

/// Where configuration comes from.
#[derive(Args, Debug, Default, Clone)]
pub struct ConfigArgs {
    /// A TOML file whose keys override the defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Overrides: `--section.key VALUE` or `--section.key=VALUE` (every key: `lattice run --help`
    /// or `lattice config --defaults`).
    #[arg(
        value_name = "--section.key VALUE",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..
    )]
    pub overrides: Vec<String>,
}

/// The configuration sources named on the command line.
#[derive(Debug, PartialEq, Default)]
pub struct Sources {
    /// `--config FILE`.
    pub file: Option<PathBuf>,
    /// `(section.key, value)` pairs.
    pub overrides: Vec<(String, String)>,
}

impl ConfigArgs {
    /// The file and the `(section.key, value)` overrides. Errors are one line for the user.
    pub fn sources(&self) -> Result<Sources, String> {
        let mut out = Sources {
            file: self.config.clone(),
            overrides: Vec::new(),
        };
        let mut it = self.overrides.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!(
                    "unexpected argument `{a}` (options look like --section.key value)"
                ));
            };
            // The name first: `--bogus` alone is an unknown option, not one missing its value.
            let name = key.split_once('=').map_or(key, |(k, _)| k);
            if name != "config" && !name.contains('.') {
                return Err(format!(
                    "unknown option --{name} (config keys look like --section.key)"
                ));
            }
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
                // Without an override before it, clap refuses a second `--config`: so does this.
                if out.file.is_some() {
                    return Err("option --config given twice (one configuration file; override single keys with --section.key)".into());
                }
                out.file = Some(PathBuf::from(value));
            } else {
                out.overrides.push((key, value));
            }
        }
        Ok(out)
    }

    /// `lattice config --defaults` prints the embedded defaults whatever the sources say: a
    /// `--config` or an override with it would be silently ignored, so it is refused.
    pub fn check_defaults_alone(&self) -> Result<(), String> {
        if self.config.is_some() || !self.overrides.is_empty() {
            return Err(
                "config --defaults prints the documented defaults and takes no --config or --section.key override (without --defaults it prints the merged configuration)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The clap command with the configuration keys appended to the help of `lattice`, `run` and
/// `config`.
pub fn command() -> clap::Command {
    let keys = keys_help();
    Cli::command()
        .after_help(keys.clone())
        .mut_subcommand("run", |c| c.after_help(keys.clone()))
        .mut_subcommand("config", |c| c.after_help(keys))
}

/// Parses the process arguments; exits with clap's message (code 2) on bad usage, 0 for --help.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (without the program name), for tests.
pub fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
    let matches =
        command().try_get_matches_from(std::iter::once("lattice").chain(args.iter().copied()))?;
    Cli::from_arg_matches(&matches)
}

/// Every config key with its default and meaning, grouped by section.
pub fn keys_help() -> String {
    let mut s = String::from(
        "CONFIGURATION KEYS:\n\
Every key below can be set in the TOML file given by --config, as --section.key VALUE (or\n\
--section.key=VALUE) after the subcommand, or as the environment variable LATTICE_SECTION__KEY.\n\
Precedence: command line > environment > config file > defaults (`lattice config --defaults`).\n\
A --section.key given twice is not an error: the last one wins. --config may be given once.\n\
Bad configuration prints one line naming the key and exits with code 2.\n",
    );
    let mut section = String::new();
    for d in key_docs(&schema()) {
        let sec = d.key.split('.').next().unwrap_or_default();
        if sec != section {
            s.push_str(&format!("\n  [{sec}]\n"));
            section = sec.to_string();
        }
        s.push_str(&format!(
            "  --{:<32} default {}\n      {}\n",
            d.key, d.default, d.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_with_overrides_anywhere() {
        let cli = try_parse(&[
            "run",
            "--config",
            "x.toml",
            "--net.listen",
            "1.2.3.4:5",
            "--log.format=json",
        ])
        .unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!("not run: {cli:?}");
        };
        assert_eq!(
            args.sources().unwrap(),
            Sources {
                file: Some("x.toml".into()),
                overrides: vec![
                    ("net.listen".into(), "1.2.3.4:5".into()),
                    ("log.format".into(), "json".into())
                ],
            }
        );
        let cli = try_parse(&["run", "--net.listen", "a:1", "--config", "y.toml"]).unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.sources().unwrap().file, Some("y.toml".into()));
        // A key given twice is kept twice, in order: the later one is merged last and wins.
        let cli = try_parse(&["run", "--cluster.node_id", "a", "--cluster.node_id=b"]).unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!()
        };
        let c =
            crate::config::Config::load(None, vec![], args.sources().unwrap().overrides).unwrap();
        assert_eq!(c.cluster.node_id, "b");
        // One --config only, wherever the second one stands.
        assert!(try_parse(&["run", "--config", "x.toml", "--config", "y.toml"]).is_err());
        for args in [
            &[
                "run",
                "--config",
                "x.toml",
                "--net.listen",
                "a:1",
                "--config",
                "y.toml",
            ][..],
            &[
                "run",
                "--net.listen",
                "a:1",
                "--config",
                "x.toml",
                "--config",
                "y.toml",
            ],
        ] {
            let Some(Command::Run(a)) = try_parse(args).unwrap().command else {
                panic!("{args:?}")
            };
            assert!(
                a.sources().unwrap_err().contains("--config given twice"),
                "{args:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_usage() {
        assert!(try_parse(&["fly"]).is_err());
        let Some(Command::Run(a)) = try_parse(&["run", "--net.listen"]).unwrap().command else {
            panic!()
        };
        assert!(a.sources().unwrap_err().contains("needs a value"));
        let Some(Command::Run(a)) = try_parse(&["run", "--bogus-option"]).unwrap().command else {
            panic!()
        };
        assert!(
            a.sources()
                .unwrap_err()
                .contains("unknown option --bogus-option"),
            "an unknown option alone is named as unknown"
        );
        for args in [
            &["config", "--defaults", "--net.max_frame", "5"][..],
            &["config", "--defaults", "--config", "/nonexistent"],
        ] {
            let Some(Command::Config {
                defaults: true,
                args: a,
            }) = try_parse(args).unwrap().command
            else {
                panic!("{args:?}")
            };
            assert!(a.check_defaults_alone().is_err(), "{args:?}");
        }
        assert!(
            try_parse(&["admin", "--timeout", "0", "reload"]).is_err(),
            "--timeout 0"
        );
        let Some(Command::Run(a)) = try_parse(&["run", "stray"]).unwrap().command else {
            panic!()
        };
        assert!(a.sources().is_err());
        let Some(Command::Run(a)) = try_parse(&["run", "--verbose", "1"]).unwrap().command else {
            panic!()
        };
        assert!(a.sources().is_err());
        assert!(
            try_parse(&["tool", "migrate"]).is_err(),
            "--print is required"
        );
        assert!(
            try_parse(&["tool", "db-restore"]).is_err(),
            "FILE is required"
        );
        assert!(
            try_parse(&["tool", "machine-id", "release"]).is_err(),
            "--id is required"
        );
    }

    #[test]
    fn parses_tools_with_overrides() {
        let cli = try_parse(&[
            "tool",
            "machine-id",
            "request",
            "--node",
            "n1",
            "--id",
            "3",
            "--storage.backend",
            "mysql",
        ])
        .unwrap();
        let Some(Command::Tool(Tool::MachineId(MachineIdCmd::Request { node, id, args, .. }))) =
            cli.command
        else {
            panic!("{cli:?}")
        };
        assert_eq!((node.as_deref(), id), (Some("n1"), Some(3)));
        assert_eq!(args.sources().unwrap().overrides.len(), 1);
        let cli = try_parse(&["tool", "db-restore", "f.bak", "--storage.database", "x"]).unwrap();
        let Some(Command::Tool(Tool::DbRestore { file, args })) = cli.command else {
            panic!()
        };
        assert_eq!(file, PathBuf::from("f.bak"));
        assert_eq!(args.sources().unwrap().overrides[0].0, "storage.database");
    }

    #[test]
    fn help_lists_every_key() {
        let h = keys_help();
        for d in key_docs(&schema()) {
            assert!(
                h.contains(&format!("--{}", d.key)),
                "{} missing from --help",
                d.key
            );
        }
        command().debug_assert();
    }
}
