//! Small text helpers shared by the account rules, the admin API and the HTML pages.

/// Characters that hide or disguise text: every format character (Unicode general category Cf
/// as of Unicode 16: the soft hyphen, zero-width and bidirectional controls, the byte-order mark,
/// the tag block) and the characters that display as nothing (combining grapheme joiner, Hangul
/// fillers, Khmer inherent vowels, Mongolian variation selectors, the blank Braille pattern, the
/// variation selectors). Whole blocks are refused where Cf fills most of them (U+2060–U+206F,
/// U+FFF0–U+FFFB, U+E0000–U+E0FFF), unassigned code points included. Control characters and the
/// line and paragraph separators are not in this set: callers add them where they matter.
pub fn invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F | 0x200B..=0x200F | 0x202A..=0x202E
        | 0x2060..=0x206F | 0x2800 | 0x3164 | 0xFE00..=0xFE0F | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB
        | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF)
}

/// `s` for HTML text or a double-quoted attribute: `&`, `<`, `>` and `"` escaped, control
/// characters shown as spaces.
pub fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c if c.is_control() => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_blank_characters_are_invisible_letters_and_separators_are_not() {
        for c in [
            '\u{AD}',
            '\u{200B}',
            '\u{202E}',
            '\u{2065}',
            '\u{FEFF}',
            '\u{2800}',
            '\u{E0041}',
            '\u{E0100}',
            '\u{110BD}',
        ] {
            assert!(invisible(c), "{:04X}", c as u32);
        }
        for c in [
            'a',
            ' ',
            '\u{2028}',
            '\u{2029}',
            '\u{3000}',
            '\u{00E9}',
            '\u{4E2D}',
            '\u{1F600}',
        ] {
            assert!(!invisible(c), "{:04X}", c as u32);
        }
    }

    #[test]
    fn html_escape_covers_markup_and_controls() {
        assert_eq!(html_escape("a<b>&\"c\"\n"), "a&lt;b&gt;&amp;&quot;c&quot; ");
    }
}
