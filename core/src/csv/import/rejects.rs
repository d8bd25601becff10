//! The rejects file of `import --skip-invalid`: every rejected row as it was, with its line number,
//! column and reason in front. Written to a temporary file and renamed, so it is never half-written;
//! every cell goes through [`crate::csv::safe_cell`], so a field like `=HYPERLINK(…)` is text there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::{open_pass, RowError, Step};
use crate::csv::cell::write_safe_record;

/// Copies the rejected rows of `input` into `rejects`, with `line,column,reason` columns first.
pub fn write_rejects(
    input: &Path,
    rejects: &Path,
    rejected: &BTreeMap<u64, RowError>,
) -> std::io::Result<()> {
    let directory = rejects
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temporary = tempfile::NamedTempFile::new_in(directory)?;
    {
        let mut pass = open_pass(input).map_err(std::io::Error::other)?;
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(temporary.as_file_mut());
        let header = ["line", "column", "reason"]
            .into_iter()
            .map(String::from)
            .chain(pass.column_names().iter().cloned());
        write_safe_record(&mut writer, header)?;
        let mut record = csv::ByteRecord::new();
        let mut written = 0;
        loop {
            match pass.next(&mut record) {
                Step::End => break,
                Step::Row(line) => {
                    if let Some(reject) = rejected.get(&line) {
                        write_one(&mut writer, reject, &record)?;
                        written += 1;
                        if written == rejected.len() {
                            break;
                        }
                    }
                }
                Step::Unreadable {
                    line, can_continue, ..
                } => {
                    // An unreadable record is reported with no fields.
                    if let Some(reject) = rejected.get(&line) {
                        write_one(&mut writer, reject, &csv::ByteRecord::new())?;
                        written += 1;
                    }
                    if !can_continue {
                        break;
                    }
                }
            }
        }
        writer.flush()?;
    }
    temporary.as_file().sync_all()?;
    temporary.persist(rejects).map_err(|e| e.error)?;
    Ok(())
}

fn write_one<W: Write>(
    writer: &mut csv::Writer<W>,
    reject: &RowError,
    fields: &csv::ByteRecord,
) -> std::io::Result<()> {
    let mut out = csv::ByteRecord::new();
    out.push_field(reject.line.to_string().as_bytes());
    out.push_field(reject.column.as_deref().unwrap_or("").as_bytes());
    out.push_field(reject.reason.as_bytes());
    out.extend(fields.iter());
    write_safe_record(writer, &out)?;
    Ok(())
}
