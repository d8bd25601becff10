//! A small element tree over quick-xml for the XML statement formats: local names (any namespace
//! prefix), attributes, text, and each element's line for errors. DTDs are refused.

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::StatementError;

/// Most elements one file may hold (a guard against a file built to exhaust memory).
pub const MAX_ELEMENTS: usize = 5_000_000;

#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
    pub line: usize,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element at a `/`-separated path of local names below this one.
    pub fn at(&self, path: &str) -> Option<&Element> {
        path.split('/')
            .try_fold(self, |element, name| element.child(name))
    }

    /// The trimmed text at `path`, when present and not empty.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        self.at(path)
            .map(|e| e.text.trim())
            .filter(|t| !t.is_empty())
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where each line starts, so that an offset's line is a binary search (the file is scanned once,
/// not once per element).
struct Lines(Vec<usize>);

impl Lines {
    fn of(bytes: &[u8]) -> Lines {
        Lines(
            bytes
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i)
                .collect(),
        )
    }

    /// The 1-based line of `offset`: one more than the newlines before it.
    fn line_of(&self, offset: usize) -> usize {
        1 + self.0.partition_point(|newline| *newline < offset)
    }
}

fn local(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match name.rsplit_once(':') {
        Some((_, local)) => local.to_string(),
        None => name.into_owned(),
    }
}

/// Parses the whole document into its root element.
pub fn parse(bytes: &[u8]) -> Result<Element, StatementError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().trim_text(false);
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut count = 0usize;
    let lines = Lines::of(bytes);
    let error_at = |offset: u64, message: String| {
        StatementError::new(
            format!("line {}", lines.line_of(offset as usize)),
            None,
            message,
        )
    };
    loop {
        let offset = reader.buffer_position();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| error_at(reader.error_position(), format!("not well-formed XML: {e}")))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(StatementError::file(format!(
                        "the file has more than {MAX_ELEMENTS} elements"
                    )));
                }
                let mut element = Element {
                    name: local(start.name().as_ref()),
                    line: lines.line_of(offset as usize),
                    ..Element::default()
                };
                for attribute in start.attributes() {
                    let attribute =
                        attribute.map_err(|e| error_at(offset, format!("bad attribute: {e}")))?;
                    let value = attribute
                        .unescape_value()
                        .map_err(|e| error_at(offset, format!("bad attribute value: {e}")))?;
                    element
                        .attributes
                        .push((local(attribute.key.as_ref()), value.into_owned()));
                }
                if empty {
                    stack
                        .last_mut()
                        .expect("the document element")
                        .children
                        .push(element);
                } else {
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let element = stack.pop().expect("an open element");
                let Some(parent) = stack.last_mut() else {
                    return Err(error_at(offset, "an end tag without its start".into()));
                };
                parent.children.push(element);
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|e| error_at(offset, format!("bad text: {e}")))?;
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&text);
                }
            }
            Event::CData(data) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&String::from_utf8_lossy(&data));
                }
            }
            Event::DocType(_) => {
                return Err(error_at(
                    offset,
                    "a DTD is not accepted in a statement".into(),
                ))
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(StatementError::file("the XML ends inside an element"));
    }
    let mut document = stack.pop().expect("the document");
    match document.children.len() {
        1 => Ok(document.children.remove(0)),
        0 => Err(StatementError::file("the file holds no XML element")),
        _ => Err(StatementError::file(
            "the XML has more than one root element",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_is_on_one_more_line_than_the_newlines_before_it() {
        let lines = Lines::of(b"a\nbc\n\nd");
        assert_eq!(lines.line_of(0), 1);
        assert_eq!(lines.line_of(1), 1, "the newline ends line 1");
        assert_eq!(lines.line_of(2), 2);
        assert_eq!(lines.line_of(5), 3);
        assert_eq!(lines.line_of(6), 4);
        assert_eq!(lines.line_of(99), 4);
    }

    #[test]
    fn elements_know_their_line() {
        let a = parse(b"<a>\n<b/>\n\n<c>x</c></a>").unwrap();
        assert_eq!(a.name, "a");
        assert_eq!(a.line, 1);
        assert_eq!(a.children[0].line, 2);
        assert_eq!(a.children[1].line, 4);
    }
}
