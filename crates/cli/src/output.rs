//! Rendering for humans (aligned tables) and for scripts (JSON), and the
//! byte-exact record writers `tail` uses.

use std::io::Write;

use base64::Engine;
use fjord_client::ConsumedRecord;
use serde_json::{json, Map, Value};

/// A table printed with columns padded to their widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header row.
    pub(crate) fn new(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    /// Adds a row.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, two spaces between columns, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints a JSON document on one line of stdout.
pub(crate) fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes a record's value followed by `\n`, bytes as they are (a tombstone
/// prints an empty line).
pub(crate) fn write_text(out: &mut impl Write, rec: &ConsumedRecord) -> std::io::Result<()> {
    out.write_all(rec.value.as_deref().unwrap_or_default())?;
    out.write_all(b"\n")
}

/// Writes a record as one JSON object and `\n`. Keys and values that are
/// not UTF-8 go under `key_base64` / `value_base64` instead; header values
/// that are not UTF-8 are written with replacement characters.
pub(crate) fn write_json(out: &mut impl Write, rec: &ConsumedRecord) -> std::io::Result<()> {
    let mut obj = Map::new();
    obj.insert("partition".into(), json!(rec.partition));
    obj.insert("offset".into(), json!(rec.offset));
    obj.insert("timestamp".into(), json!(rec.timestamp));
    insert_bytes(&mut obj, "key", rec.key.as_deref());
    let headers: Map<String, Value> = rec
        .headers
        .iter()
        .map(|h| {
            (h.key.clone(), h.value.as_deref().map_or(Value::Null, |v| String::from_utf8_lossy(v).into()))
        })
        .collect();
    obj.insert("headers".into(), Value::Object(headers));
    insert_bytes(&mut obj, "value", rec.value.as_deref());
    serde_json::to_writer(&mut *out, &Value::Object(obj))?;
    out.write_all(b"\n")
}

fn insert_bytes(obj: &mut Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => {
            obj.insert(field.into(), Value::Null);
        }
        Some(Ok(s)) => {
            obj.insert(field.into(), s.into());
        }
        Some(Err(_)) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes.unwrap_or_default());
            obj.insert(format!("{field}_base64"), encoded.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use fjord_client::Header;

    fn rec(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumedRecord {
        ConsumedRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            timestamp: 1000,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![Header { key: "h".into(), value: Some(Bytes::from_static(b"v")) }],
        }
    }

    fn json_of(r: &ConsumedRecord) -> Value {
        let mut buf = Vec::new();
        write_json(&mut buf, r).unwrap();
        assert_eq!(buf.last(), Some(&b'\n'));
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn json_records() {
        let v = json_of(&rec(Some(b"k"), Some(b"hello")));
        assert_eq!(
            v,
            json!({"partition": 2, "offset": 7, "timestamp": 1000, "key": "k", "headers": {"h": "v"}, "value": "hello"})
        );
        let v = json_of(&rec(None, Some(&[0xff, 0x00])));
        assert_eq!(v["key"], Value::Null);
        assert_eq!(v["value_base64"], "/wA=");
        assert!(v.get("value").is_none());
        assert_eq!(json_of(&rec(None, None))["value"], Value::Null);
    }

    #[test]
    fn text_is_lossless() {
        let mut buf = Vec::new();
        write_text(&mut buf, &rec(None, Some(&[0xff, b'a']))).unwrap();
        assert_eq!(buf, [0xff, b'a', b'\n']);
    }

    #[test]
    fn table_pads_columns() {
        let mut t = Table::new(&["NAME", "PARTITIONS"]);
        t.row(vec!["events".into(), "3".into()]);
        t.row(vec!["x".into(), "12".into()]);
        assert_eq!(t.render(), "NAME    PARTITIONS\nevents  3\nx       12\n");
    }
}
