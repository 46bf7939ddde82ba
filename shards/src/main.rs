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
        Command::Config { defaults: true, .. } => {
            print!("{}", lattice_server::config::schema());
            exit::OK
        }
        Command::Config { args, .. } => {
            let c = load_or_exit(&args);
            print!("{}", toml::to_string(&c.table).unwrap_or_default());
            exit::OK
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
            clap_complete::generate(
                shell,
                &mut cli::command(),
                "lattice",
                &mut std::io::stdout(),
            );
            exit::OK
        }
        Command::Run(args) => {
            let c = load_or_exit(&args);
            if let Err(e) = lattice_runtime::telemetry::log::init(&c.log) {
                std::process::exit(fail(exit::CONFIG, e));
            }
            install_panic_hook();
            if cfg!(feature = "alloc-lattice") {
                lattice_runtime::enable_allocator_duties();
            }
            tracing::info!(allocator = ALLOCATOR, "starting");
            server::run(c)
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

/// Panics (caught by the shard or not) are logged through tracing with their location.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = lattice_runtime::shard::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("?"), at, panic = %msg, "panic");
    }));
}
