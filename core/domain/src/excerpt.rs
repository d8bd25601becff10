//! User input quoted in error messages, cut to a readable length: a 10 MB cell gives a short
//! message that still says how long the value was.

use std::fmt;

/// How many characters of a value an error message quotes.
pub const MAX_QUOTED_CHARS: usize = 40;

/// `text` as `"…"` with escapes (as `{:?}` would), or, when longer than [`MAX_QUOTED_CHARS`],
/// its beginning and its length: `"mmmm…" (10485760 bytes)`.
pub struct Excerpt<'a>(pub &'a str);

/// Shorthand for [`Excerpt`].
pub fn excerpt(text: &str) -> Excerpt<'_> {
    Excerpt(text)
}

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_QUOTED_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let quoted = format!("{:?}", &self.0[..cut]);
                let open = &quoted[..quoted.len() - 1];
                write!(f, "{open}…\" ({} bytes)", self.0.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole_and_long_ones_cut_with_their_length() {
        assert_eq!(excerpt("12,5").to_string(), "\"12,5\"");
        assert_eq!(excerpt("a\"b").to_string(), "\"a\\\"b\"");
        let long = "m".repeat(10 * 1024 * 1024);
        let shown = excerpt(&long).to_string();
        assert_eq!(shown, format!("\"{}…\" (10485760 bytes)", "m".repeat(40)));
        // A cut never splits a character.
        let arabic = "ر".repeat(50);
        assert!(excerpt(&arabic)
            .to_string()
            .starts_with(&format!("\"{}…", "ر".repeat(40))));
    }
}
