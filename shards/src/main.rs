//! The `lattice` binary.

#[cfg(any(
    all(feature = "alloc-lattice", feature = "alloc-jemalloc"),
    all(feature = "alloc-lattice", feature = "alloc-system"),
    all(feature = "alloc-jemalloc", feature = "alloc-system"),
))]
compile_error!("choose one allocator feature: alloc-lattice, alloc-jemalloc or alloc-system (use --no-default-features)");

#[cfg(feature = "alloc-lattice")]
#[global_allocator]
static GLOBAL: lattice_runtime::alloc::LatticeAlloc = lattice_runtime::alloc::LatticeAlloc::new();

#[cfg(feature = "alloc-jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Name of the allocator this binary was built with.
const ALLOCATOR: &str = if cfg!(feature = "alloc-lattice") {
    "lattice"
} else if cfg!(feature = "alloc-jemalloc") {
    "jemalloc"
} else {
    "system"
};

use lattice_server::cli::{self, Command, ConfigArgs, Tool};
use lattice_server::config::Config;
use lattice_server::server::{self, exit};

fn main() {
    let cli = cli::parse();
    if cli.version {
        println!(
            "lattice {} (protocol {}, allocator {ALLOCATOR})",
            env!("CARGO_PKG_VERSION"),
            lattice_proto::version::PROTOCOL
        );
        std::process::exit(exit::OK);
    }
    let Some(command) = cli.command else {
        // arg_required_else_help: clap printed the help already.
        std::process::exit(exit::CONFIG);
    };
    let code = match command {
        Command::Config {
            defaults: true,
            args,
        } => match args.check_defaults_alone() {
            Ok(()) => {
                print!("{}", lattice_server::config::schema());
                exit::OK
            }
            Err(e) => fail(exit::CONFIG, e),
        },
        Command::Config { args, .. } => {
            let c = load_or_exit(&args);
            if let Err(e) = lattice_server::server::check(&c) {
                fail(exit::CONFIG, e)
            } else {
                print!("{}", toml::to_string(&c.table).unwrap_or_default());
                exit::OK
            }
        }
        Command::Tool(Tool::Migrate { args, .. }) => {
            let c = load_or_exit(&args);
            match lattice_storage::migrate::print_sql(
                &c.storage,
                lattice_server::server::schema().migrations(),
            ) {
                Ok(sql) => {
                    print!("{sql}");
                    exit::OK
                }
                Err(e) => fail(exit::FAILURE, e),
            }
        }
        Command::Admin(args) => lattice_server::tools::admin::run(&args),
        Command::Tool(Tool::Ps) => {
            let procs = lattice_server::tools::ps::scan(std::path::Path::new("/proc"));
            print!("{}", lattice_server::tools::ps::render(&procs));
            exit::OK
        }
        Command::Tool(Tool::Version { version }) => {
            match lattice_server::tools::version::run(version.as_deref()) {
                Ok(s) => {
                    print!("{s}");
                    exit::OK
                }
                Err(e) => fail(exit::CONFIG, e),
            }
        }
        Command::Tool(Tool::GenCert { out, force }) => {
            match lattice_server::tools::gen_cert::run(&out, force) {
                Ok(w) => {
                    println!(
                        "wrote {} and {} (self-signed, for {}); run with --tls.cert {} --tls.key {}",
                        w.cert.display(),
                        w.key.display(),
                        lattice_server::tools::gen_cert::NAMES.join(", "),
                        w.cert.display(),
                        w.key.display()
                    );
                    exit::OK
                }
                Err(e) => fail(exit::FAILURE, e),
            }
        }
        Command::Tool(tool) => lattice_server::tools::run(tool, &load_or_exit),
        Command::Completions { shell } => {
            // Written in one go: a reader that stops early (`| head`) ends the output, not the
            // process with a panic.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli::command(), "lattice", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => exit::OK,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
                Err(e) => fail(exit::FAILURE, format!("stdout: {e}")),
            }
        }
        Command::Run(args) => {
            let c = load_or_exit(&args);
            if let Err(e) = lattice_runtime::telemetry::log::init(&c.log) {
                std::process::exit(fail(exit::CONFIG, e));
            }
            lattice_server::crash::setup();
            if cfg!(feature = "alloc-lattice") {
                lattice_runtime::enable_allocator_duties();
            }
            tracing::info!(allocator = ALLOCATOR, "starting");
            let code = server::run(c);
            // Every line logged so far reaches stderr and the file before the process ends.
            lattice_runtime::telemetry::log_writer::flush(std::time::Duration::from_secs(2));
            code
        }
    };
    std::process::exit(code);
}

/// Prints `lattice: {e}` (one line) and returns `code`.
fn fail(code: i32, e: impl std::fmt::Display) -> i32 {
    eprintln!("lattice: {e}");
    code
}

/// Loads the configuration, or exits with the config exit code and a one-line error.
fn load_or_exit(args: &ConfigArgs) -> Config {
    let sources = args
        .sources()
        .unwrap_or_else(|e| std::process::exit(fail(exit::CONFIG, e)));
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(sources.file.as_deref(), env, sources.overrides)
        .unwrap_or_else(|e| std::process::exit(fail(exit::CONFIG, e)))
}
