//! `lattice tool gen-password`: random passwords from the OS's randomness, uniformly over 70
//! characters (letters, digits, `-_.!@#%+=`), about 6.1 bits each (20 characters ≈ 122 bits).

use std::io::Write;

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!@#%+=";

/// One password of `len` characters.
pub fn password(len: usize) -> Result<String, String> {
    let mut out = String::with_capacity(len);
    // Rejection sampling keeps every character equally likely (256 is not a multiple of 70).
    let limit = 256 - (256 % ALPHABET.len());
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| format!("no OS randomness: {e}"))?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

/// Writes `count` passwords of `length` characters, one per line.
pub fn run(length: usize, count: usize, w: &mut dyn Write) -> Result<(), String> {
    if !(8..=256).contains(&length) {
        return Err(format!("--length {length}: must be 8..=256"));
    }
    if !(1..=10_000).contains(&count) {
        return Err(format!("--count {count}: must be 1..=10000"));
    }
    for _ in 0..count {
        writeln!(w, "{}", password(length)?).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_alphabet_and_spread() {
        let mut out = Vec::new();
        run(32, 50, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 50);
        assert!(lines
            .iter()
            .all(|l| l.len() == 32 && l.bytes().all(|b| ALPHABET.contains(&b))));
        let distinct: std::collections::HashSet<&&str> = lines.iter().collect();
        assert_eq!(distinct.len(), 50);
        // 1600 characters over 70 symbols: every symbol class shows up.
        assert!(text.bytes().any(|b| b.is_ascii_digit()));
        assert!(text.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(run(4, 1, &mut Vec::new()).is_err());
        assert!(run(20, 0, &mut Vec::new()).is_err());
    }
}
