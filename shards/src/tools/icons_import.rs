//! `lattice tool icons import --dir DIR`: reads `DIR/icons.txt` and each `NAME.png`, checks them,
//! and stores them in the `icon` table (applying migrations first when `storage.auto_migrate`),
//! deleting icons no longer listed. Nothing is written when any icon is bad.

use std::path::Path;

use lattice_proto::icons::{self, IconDecl};
use lattice_storage::direct::Direct;
use lattice_storage::{backend::Dialect, Value};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::logic::icons::IconsConfig;

/// PNG signature.
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A checked icon ready to store.
#[derive(Debug)]
pub struct Checked {
    /// Its declaration.
    pub decl: IconDecl,
    /// The PNG bytes.
    pub png: Vec<u8>,
    /// SHA-256 of the bytes.
    pub hash: Vec<u8>,
}

/// Reads and checks every icon of `dir`: the description file parses, every file exists, is a PNG
/// (signature and an `IHDR` chunk with a size in 1..=4096) and is at most `max_bytes`.
pub fn read_dir(dir: &Path, max_bytes: usize) -> Result<Vec<Checked>, String> {
    let desc = dir.join("icons.txt");
    let text = std::fs::read_to_string(&desc).map_err(|e| format!("{}: {e}", desc.display()))?;
    let decls = icons::parse(&text).map_err(|e| format!("{}: {e}", desc.display()))?;
    let mut out = Vec::with_capacity(decls.len());
    for d in decls {
        let path = dir.join(d.file_name());
        let png = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if png.len() > max_bytes {
            return Err(format!(
                "{}: {} bytes, more than icons.max_icon_bytes ({max_bytes})",
                path.display(),
                png.len()
            ));
        }
        check_png(&png).map_err(|e| format!("{}: {e}", path.display()))?;
        let hash = Sha256::digest(&png).to_vec();
        out.push(Checked { decl: d, png, hash });
    }
    Ok(out)
}

/// Checks the PNG signature and the `IHDR` chunk's dimensions.
pub fn check_png(b: &[u8]) -> Result<(), String> {
    if b.len() < 33 || &b[..8] != PNG_MAGIC {
        return Err("not a PNG file (bad signature)".into());
    }
    if &b[12..16] != b"IHDR" {
        return Err("not a PNG file (no IHDR chunk first)".into());
    }
    let w = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
    let h = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
    if w == 0 || h == 0 || w > 4096 || h > 4096 {
        return Err(format!("{w}x{h} pixels: icons are 1..=4096 on each side"));
    }
    Ok(())
}

/// Runs the import.
pub fn run(cfg: &Config, dir: &Path) -> Result<(), String> {
    let icfg: IconsConfig =
        lattice_runtime::config::typed_section(&cfg.table, "icons").map_err(|e| e.to_string())?;
    let checked = read_dir(dir, icfg.max_icon_bytes)?;
    let db = Direct::open(&cfg.storage).map_err(|e| format!("storage: {e}"))?;
    db.migrate(
        crate::server::schema().migrations(),
        cfg.storage.auto_migrate,
    )
    .map_err(|e| format!("storage: {e}"))?;
    let upsert = match db.dialect() {
        Dialect::Mysql => {
            "INSERT INTO icon (id, name, description, hash, png) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE name = VALUES(name), description = VALUES(description), \
             hash = VALUES(hash), png = VALUES(png)"
        }
        Dialect::Sqlite => {
            "INSERT INTO icon (id, name, description, hash, png) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, description = excluded.description, \
             hash = excluded.hash, png = excluded.png"
        }
    };
    for c in &checked {
        db.exec(
            upsert,
            vec![
                Value::Int(i64::from(c.decl.id)),
                Value::Text(c.decl.name.clone()),
                Value::Text(c.decl.description.clone()),
                Value::Bytes(c.hash.clone()),
                Value::Bytes(c.png.clone()),
            ],
        )
        .map_err(|e| format!("store icon {}: {e}", c.decl.id))?;
    }
    let stored = db
        .query("SELECT id FROM icon", Vec::new())
        .map_err(|e| format!("list icons: {e}"))?;
    let mut deleted = 0;
    for r in stored {
        let Some(id) = r.first().and_then(Value::as_i64) else {
            continue;
        };
        if !checked.iter().any(|c| i64::from(c.decl.id) == id) {
            db.exec("DELETE FROM icon WHERE id = ?", vec![Value::Int(id)])
                .map_err(|e| format!("delete icon {id}: {e}"))?;
            deleted += 1;
        }
    }
    let bytes: usize = checked.iter().map(|c| c.png.len()).sum();
    println!(
        "imported {} icons ({bytes} bytes) into {}; deleted {deleted}",
        checked.len(),
        db.database()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_icons_pass_and_bad_files_are_named() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto/icons");
        let v = read_dir(&dir, 262_144).unwrap();
        assert!(v.len() >= 4);
        assert!(v.iter().all(|c| c.hash.len() == 32));
        assert!(read_dir(&dir, 10)
            .unwrap_err()
            .contains("icons.max_icon_bytes"));
        assert!(check_png(b"GIF89a.........................................").is_err());
        let mut png = std::fs::read(dir.join("coin.png")).unwrap();
        png[19] = 0; // width 0 x ...
        png[16..20].copy_from_slice(&0u32.to_be_bytes());
        assert!(check_png(&png).unwrap_err().contains("pixels"));
    }
}
