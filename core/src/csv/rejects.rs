//! The rejects file of `import --skip-invalid`: every rejected row as it was, with its line number,
//! column and reason in front. Written to a temporary file and renamed, so it is never half-written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::import::RowError;

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
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(input)
            .map_err(std::io::Error::other)?;
        let mut writer = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(temporary.as_file_mut());
        let header = reader
            .byte_headers()
            .map_err(std::io::Error::other)?
            .clone();
        let mut out_header = csv::ByteRecord::new();
        for name in ["line", "column", "reason"] {
            out_header.push_field(name.as_bytes());
        }
        out_header.extend(header.iter());
        writer.write_byte_record(&out_header)?;
        let mut record = csv::ByteRecord::new();
        let mut written = 0;
        loop {
            let line = reader.position().line();
            let line = match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => record.position().map(|p| p.line()).unwrap_or(line),
                Err(error) => {
                    // An unreadable tail: report it once with no fields.
                    let line = error.position().map(|p| p.line()).unwrap_or(line);
                    if let Some(reject) = rejected.get(&line) {
                        write_one(&mut writer, reject, &csv::ByteRecord::new())?;
                    }
                    break;
                }
            };
            if let Some(reject) = rejected.get(&line) {
                write_one(&mut writer, reject, &record)?;
                written += 1;
                if written == rejected.len() {
                    break;
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
    writer.write_byte_record(&out)?;
    Ok(())
}
