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

/// Whether `s` has a control character or an [`invisible`] one outside an emoji sequence. The
/// joiners and selectors emoji are built from are accepted where they build an emoji (what a
/// phone's emoji keyboard sends), nowhere else: a variation selector U+FE0E or U+FE0F right after
/// a [`pictographic`] character or a keycap base (`0`–`9`, `#`, `*`); a zero-width joiner U+200D
/// between two pictographic characters (a skin tone or a variation selector may come between the
/// first and the joiner); and tag characters U+E0020–U+E007E after U+1F3F4 (waving black flag),
/// ended by U+E007F (a subdivision flag such as Scotland's).
pub fn hides_text(s: &str) -> bool {
    let cs: Vec<char> = s.chars().collect();
    // The pictographic character the current emoji sequence is built on, if any.
    let mut base: Option<char> = None;
    let mut tags = false;
    for (i, &c) in cs.iter().enumerate() {
        let ok = match c as u32 {
            0xFE0E | 0xFE0F => {
                base.is_some() || (i > 0 && matches!(cs[i - 1], '0'..='9' | '#' | '*'))
            }
            0x200D => base.is_some() && cs.get(i + 1).is_some_and(|&n| pictographic(n)),
            0xE0020..=0xE007E => tags,
            0xE007F => std::mem::take(&mut tags),
            _ => !(c.is_control() || invisible(c)),
        };
        if !ok {
            return true;
        }
        match c as u32 {
            0xFE0E | 0xFE0F | 0x1F3FB..=0x1F3FF | 0x200D => {}
            0xE0020..=0xE007F => base = None,
            _ if pictographic(c) => {
                tags = c == '\u{1F3F4}';
                base = Some(c);
            }
            _ => {
                base = None;
                tags = false;
            }
        }
    }
    tags
}

/// Characters emoji are drawn from (an approximation of Unicode's Extended_Pictographic: the
/// symbol blocks that hold emoji, whole): U+00A9, U+00AE, U+203C, U+2049, U+2122, U+2139,
/// U+2194–U+21AA, U+231A–U+23FF, U+24C2, U+25AA–U+25FE, U+2600–U+27BF, U+2934–U+2935,
/// U+2B05–U+2B55, U+3030, U+303D, U+3297, U+3299, U+1F000–U+1FAFF.
pub fn pictographic(c: char) -> bool {
    matches!(c as u32,
        0x00A9 | 0x00AE | 0x203C | 0x2049 | 0x2122 | 0x2139 | 0x2194..=0x21AA | 0x231A..=0x23FF
        | 0x24C2 | 0x25AA..=0x25FE | 0x2600..=0x27BF | 0x2934..=0x2935 | 0x2B05..=0x2B55
        | 0x3030 | 0x303D | 0x3297 | 0x3299 | 0x1F000..=0x1FAFF)
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
    fn emoji_sequences_pass_and_their_joiners_alone_do_not() {
        for ok in [
            "Ann\u{2764}\u{FE0F}",                         // red heart as keyboards send it
            "1\u{FE0F}\u{20E3}",                           // keycap one
            "\u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",          // rainbow flag
            "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}", // family
            "\u{1F469}\u{1F3FD}\u{200D}\u{1F4BB}",         // technologist, skin tone
            "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}", // Scotland
            "\u{1F1EF}\u{1F1F5}x",                         // regional-indicator flag
            "plain name",
        ] {
            assert!(!hides_text(ok), "{ok:?} refused");
        }
        for bad in [
            "a\u{FE0F}",                    // selector after a letter
            "\u{FE0F}",                     // alone
            "adm\u{200D}in",                // joiner between letters
            "\u{1F468}\u{200D}",            // joiner at the end
            "\u{1F468}\u{200D}a",           // joiner before a letter
            "a\u{200D}\u{1F468}",           // joiner after a letter
            "x\u{E0067}\u{E007F}",          // tags without the black flag
            "\u{1F3F4}\u{E0067}\u{E0062}",  // tag sequence not ended
            "\u{1F600}\u{E007F}",           // cancel tag alone
            "\u{1F3F4}\u{E0067}a\u{E007F}", // a letter inside a tag sequence
            "a\u{200B}b",                   // other invisible characters stay refused
            "a\u{7}",                       // control
            "\u{1F600}\u{FE00}",            // other selectors stay refused
        ] {
            assert!(hides_text(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn html_escape_covers_markup_and_controls() {
        assert_eq!(html_escape("a<b>&\"c\"\n"), "a&lt;b&gt;&amp;&quot;c&quot; ");
    }
}
