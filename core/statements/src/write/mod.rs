//! Statement files written from domain statements: what the demo and the tests feed the importer.
//! Each writer's output reads back through its parser to the same entries.

mod camt053;
mod mt940;
mod ofx;
mod reports;

pub use camt053::{camt053, Camt053Version};
pub use mt940::mt940;
pub use ofx::{ofx, OfxVersion};
pub use reports::{payout_report, provider_report};

/// Escapes text for XML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
