//! Spreadsheet-safe CSV cells: the one rule against formula injection that every CSV Settle writes
//! (the settlement export, the import's rejects file) applies to every cell, header included.

use std::borrow::Cow;
use std::io::Write;

/// Bytes that make a spreadsheet read a cell as a formula (or strip them to reach one) when they
/// lead it: OWASP's list for CSV injection.
const FORMULA_LEADERS: &[u8] = b"=+-@\t\r";

/// `cell` as it may be written to a CSV: a cell starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'`, so a spreadsheet shows it as text instead of evaluating it
/// (OWASP's "CSV Injection" guidance).
///
/// A plain number — an optional sign, digits, optionally a `.` and more digits (`-5.00`, `-500`,
/// `+3`) — is left as it is: it cannot carry a formula, and finance exports must stay numeric
/// (a signed amount with a quote in front would be text to the spreadsheet).
pub fn safe_cell(cell: &[u8]) -> Cow<'_, [u8]> {
    match cell.first() {
        Some(first) if FORMULA_LEADERS.contains(first) && !is_plain_number(cell) => {
            let mut quoted = Vec::with_capacity(cell.len() + 1);
            quoted.push(b'\'');
            quoted.extend_from_slice(cell);
            Cow::Owned(quoted)
        }
        _ => Cow::Borrowed(cell),
    }
}

/// Writes one record with every cell passed through [`safe_cell`].
pub fn write_safe_record<W, I, T>(writer: &mut csv::Writer<W>, cells: I) -> csv::Result<()>
where
    W: Write,
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut record = csv::ByteRecord::new();
    for cell in cells {
        record.push_field(&safe_cell(cell.as_ref()));
    }
    writer.write_byte_record(&record)
}

/// `[+-]?digits(.digits)?`, nothing else.
fn is_plain_number(cell: &[u8]) -> bool {
    let unsigned = cell.strip_prefix(b"-").or_else(|| cell.strip_prefix(b"+"));
    let digits = unsigned.unwrap_or(cell);
    let (whole, fraction) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all_digits = |part: &[u8]| !part.is_empty() && part.iter().all(u8::is_ascii_digit);
    all_digits(whole) && fraction.is_none_or(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safe(cell: &str) -> String {
        String::from_utf8(safe_cell(cell.as_bytes()).into_owned()).unwrap()
    }

    #[test]
    fn formula_leading_cells_get_a_quote() {
        for (cell, expected) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("+", "'+"),
            ("-5.", "'-5."),
            ("-.5", "'-.5"),
            ("-1e5", "'-1e5"),
            ("- 5", "'- 5"),
        ] {
            assert_eq!(safe(cell), expected, "{cell:?}");
        }
    }

    #[test]
    fn numbers_and_ordinary_text_are_left_alone() {
        for cell in [
            "-5.00",
            "-500",
            "+3",
            "0.031",
            "12",
            "m-001",
            "pay=1",
            "2024-03-10",
            "",
            "'=x",
        ] {
            assert_eq!(safe(cell), cell, "{cell:?}");
            assert!(matches!(safe_cell(cell.as_bytes()), Cow::Borrowed(_)));
        }
    }

    #[test]
    fn records_are_written_with_every_cell_made_safe() {
        let mut writer = csv::Writer::from_writer(Vec::new());
        write_safe_record(&mut writer, ["=1+1", "-5.00", "@x", "plain"]).unwrap();
        let written = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(written, "'=1+1,-5.00,'@x,plain\n");
    }
}
