//! TypeScript exporter (filled in below the registry work).
use super::{EnumDef, Msg};

pub fn generate(_msgs: &[Msg], _enums: &[EnumDef]) -> Result<Vec<(String, String)>, String> {
    Ok(Vec::new())
}
