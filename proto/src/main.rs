//! `lattice-proto`: writes the TypeScript client generated from the `.proto` files.
//!
//! ```text
//! lattice-proto gen-ts --out DIR     write the files into DIR
//! lattice-proto check-ts --out DIR   exit 1 if DIR differs from what gen-ts would write
//! lattice-proto opcodes              print the opcode table
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: lattice-proto gen-ts --out DIR | check-ts --out DIR | opcodes";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out_dir = || -> Option<PathBuf> {
        match args.get(1..) {
            Some([flag, dir]) if flag == "--out" => Some(PathBuf::from(dir)),
            _ => None,
        }
    };
    match args.first().map(String::as_str) {
        Some("gen-ts") => {
            let Some(dir) = out_dir() else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            match lattice_proto::ts::write_all(&dir) {
                Ok(paths) => {
                    for p in paths {
                        println!("wrote {}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gen-ts: writing into {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some("check-ts") => {
            let Some(dir) = out_dir() else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let stale = lattice_proto::ts::stale_files(&dir);
            if stale.is_empty() {
                println!("{} is up to date", dir.display());
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "stale in {}: {} (run `cargo run -p lattice-proto -- gen-ts --out {}`)",
                    dir.display(),
                    stale.join(", "),
                    dir.display()
                );
                ExitCode::FAILURE
            }
        }
        Some("opcodes") => {
            println!("opcode  name            no_log_req  no_log_resp  no_client");
            for i in lattice_proto::all() {
                println!(
                    "{:>6}  {:<14}  {:<10}  {:<11}  {}",
                    i.opcode, i.name, i.no_log_request, i.no_log_response, i.no_client
                );
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
