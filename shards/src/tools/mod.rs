//! The work of the operator subcommands of the `lattice` binary (`lattice admin`, `lattice tool
//! …`), one file each. The database tools talk to it directly (`lattice_storage::direct`), never
//! through a running server's write-behind engine, so they work whether the server runs or not
//! (except `db-restore`, which needs it stopped).
//!
//! Exit codes of the database tools: 0 done, 1 the work failed (one line on stderr saying why), 2
//! bad usage or config.

pub mod admin;
pub mod db_backup;
pub mod gen_cert;
pub mod gen_password;
pub mod icons_import;
pub mod machine_id;

use crate::cli::{ConfigArgs, IconsCmd, MachineIdCmd, Tool};
use crate::config::Config;
use crate::server::exit;

/// Runs a tool; returns the exit code. `load` reads the configuration (or exits with code 2).
pub fn run(tool: Tool, load: &dyn Fn(&ConfigArgs) -> Config) -> i32 {
    let r = match tool {
        Tool::Migrate { .. } => Err("tool migrate is run by the binary itself".to_string()),
        Tool::GenCert { .. } | Tool::Ps | Tool::Version { .. } => {
            Err("this tool is run by the binary itself".to_string())
        }
        Tool::MachineId(cmd) => match cmd {
            MachineIdCmd::Show { args } => machine_id::show(&load(&args)),
            MachineIdCmd::Request {
                node,
                id,
                ttl_ms,
                args,
            } => machine_id::request(&load(&args), node, id, ttl_ms),
            MachineIdCmd::Release { id, force, args } => {
                machine_id::release(&load(&args), id, force)
            }
        },
        Tool::DbBackup { out, args } => db_backup::backup(&load(&args), out),
        Tool::DbRestore { file, args } => db_backup::restore(&load(&args), &file),
        Tool::GenPassword { length, count } => {
            return match gen_password::run(length, count, &mut std::io::stdout()) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("lattice: gen-password: {e}");
                    exit::CONFIG
                }
            }
        }
        Tool::Icons(IconsCmd::Import { dir, args }) => icons_import::run(&load(&args), &dir),
    };
    match r {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("lattice: {e}");
            exit::FAILURE
        }
    }
}
pub mod ps;
pub mod version;
