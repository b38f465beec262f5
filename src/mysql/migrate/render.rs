//! Turning rows read over the text protocol back into `INSERT` statements (pure).
//!
//! The text protocol gives every value as bytes in the connection's character set (utf8mb4), so the column's type
//! decides how it is written back: numbers as they are, binary types with the `_binary` introducer (no character
//! set conversion), everything else as a string literal the server converts to the column's type.

use crate::mysql::dialect::quote_identifier;

/// How a column's values are written in an `INSERT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Number,
    Binary,
    Text,
}

impl ValueKind {
    /// From `information_schema.COLUMNS.DATA_TYPE`.
    pub fn of(data_type: &str) -> ValueKind {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "decimal" | "numeric" | "float"
            | "double" | "real" | "year" => ValueKind::Number,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" | "geometry" | "point"
            | "linestring" | "polygon" | "multipoint" | "multilinestring" | "multipolygon" | "geometrycollection" => {
                ValueKind::Binary
            }
            _ => ValueKind::Text,
        }
    }
}

/// The expression that reads a column for copying. FLOAT is widened to DOUBLE: the servers print FLOAT with six
/// significant digits (which loses bits; `mysqldump` has the same flaw), DOUBLE with enough to round-trip, and
/// storing the double back into the FLOAT column restores the exact original value.
pub fn select_expression(column: &str, data_type: &str) -> String {
    if data_type.eq_ignore_ascii_case("float") {
        format!("({} + 0e0)", quote_identifier(column))
    } else {
        quote_identifier(column)
    }
}

/// Appends one value to `out`. `None` is SQL NULL.
pub fn push_value(out: &mut Vec<u8>, kind: ValueKind, value: Option<&[u8]>) {
    let Some(bytes) = value else {
        out.extend_from_slice(b"NULL");
        return;
    };
    match kind {
        ValueKind::Number if !bytes.is_empty() && bytes.iter().all(|b| b"0123456789+-.eE".contains(b)) => {
            out.extend_from_slice(bytes)
        }
        ValueKind::Binary => {
            out.extend_from_slice(b"_binary");
            push_string(out, bytes);
        }
        // A number that does not look like one is passed as a string and converted by the server, never spliced.
        ValueKind::Number | ValueKind::Text => push_string(out, bytes),
    }
}

/// A quoted string literal with the escapes `mysqldump` uses; the session must not set `NO_BACKSLASH_ESCAPES`.
fn push_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'\'');
    for &b in bytes {
        match b {
            0 => out.extend_from_slice(b"\\0"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\'' => out.extend_from_slice(b"\\'"),
            0x1a => out.extend_from_slice(b"\\Z"),
            other => out.push(other),
        }
    }
    out.push(b'\'');
}

/// The head of an `INSERT` into `schema.table` naming `columns`.
pub fn insert_head(schema: &str, table: &str, columns: &[String]) -> Vec<u8> {
    let names: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
    format!(
        "INSERT INTO {}.{} ({}) VALUES ",
        quote_identifier(schema),
        quote_identifier(table),
        names.join(", ")
    )
    .into_bytes()
}

/// Builds multi-row `INSERT` statements of about `limit` bytes each.
pub struct InsertBuilder {
    head: Vec<u8>,
    kinds: Vec<ValueKind>,
    limit: usize,
    current: Vec<u8>,
    rows: u64,
}

impl InsertBuilder {
    pub fn new(head: Vec<u8>, kinds: Vec<ValueKind>, limit: usize) -> Self {
        InsertBuilder {
            current: Vec::with_capacity(limit + limit / 4),
            head,
            kinds,
            limit,
            rows: 0,
        }
    }

    /// Adds a row; returns a finished statement when this one reached the size limit.
    pub fn push_row<'a>(&mut self, values: impl IntoIterator<Item = Option<&'a [u8]>>) -> Option<Vec<u8>> {
        if self.current.is_empty() {
            self.current.extend_from_slice(&self.head);
        } else {
            self.current.push(b',');
        }
        self.current.push(b'(');
        for (i, (value, kind)) in values.into_iter().zip(&self.kinds).enumerate() {
            if i > 0 {
                self.current.push(b',');
            }
            push_value(&mut self.current, *kind, value);
        }
        self.current.push(b')');
        self.rows += 1;
        (self.current.len() >= self.limit).then(|| self.take())
    }

    /// The statement in progress, if any rows are pending.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.current.is_empty()).then(|| self.take())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.current, Vec::with_capacity(self.limit + self.limit / 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(kind: ValueKind, value: Option<&[u8]>) -> String {
        let mut out = Vec::new();
        push_value(&mut out, kind, value);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn kinds_follow_the_column_type() {
        assert_eq!(ValueKind::of("DECIMAL"), ValueKind::Number);
        assert_eq!(ValueKind::of("year"), ValueKind::Number);
        assert_eq!(ValueKind::of("longblob"), ValueKind::Binary);
        assert_eq!(ValueKind::of("bit"), ValueKind::Binary);
        assert_eq!(ValueKind::of("json"), ValueKind::Text);
        assert_eq!(ValueKind::of("datetime"), ValueKind::Text);
        assert_eq!(ValueKind::of("enum"), ValueKind::Text);
    }

    #[test]
    fn floats_are_read_as_doubles() {
        assert_eq!(select_expression("score", "FLOAT"), "(`score` + 0e0)");
        assert_eq!(select_expression("ratio", "double"), "`ratio`");
    }

    #[test]
    fn values_are_escaped_by_kind() {
        assert_eq!(render(ValueKind::Number, Some(b"-12.50")), "-12.50");
        assert_eq!(render(ValueKind::Number, Some(b"1e308")), "1e308");
        // Never spliced: anything that is not number-shaped becomes a literal.
        assert_eq!(render(ValueKind::Number, Some(b"1;DROP")), "'1;DROP'");
        assert_eq!(render(ValueKind::Text, None), "NULL");
        assert_eq!(render(ValueKind::Text, Some(b"")), "''");
        assert_eq!(
            render(ValueKind::Text, Some("it's \\ 😀".as_bytes())),
            "'it\\'s \\\\ 😀'"
        );
        assert_eq!(render(ValueKind::Text, Some(b"a\nb\r\x1a")), "'a\\nb\\r\\Z'");
        let mut out = Vec::new();
        push_value(&mut out, ValueKind::Binary, Some(&[0, 0xff, b'\'']));
        assert_eq!(out, b"_binary'\\0\xff\\''");
    }

    #[test]
    fn statements_are_split_by_size() {
        let head = insert_head("shop", "or`ders", &["id".into(), "note".into()]);
        assert_eq!(
            String::from_utf8(head.clone()).unwrap(),
            "INSERT INTO `shop`.`or``ders` (`id`, `note`) VALUES "
        );
        let mut b = InsertBuilder::new(head, vec![ValueKind::Number, ValueKind::Text], 60);
        assert!(b.push_row([Some(&b"1"[..]), Some(&b"a"[..])]).is_none());
        let full = b.push_row([Some(&b"2"[..]), None]).expect("limit reached");
        assert_eq!(
            String::from_utf8(full).unwrap(),
            "INSERT INTO `shop`.`or``ders` (`id`, `note`) VALUES (1,'a'),(2,NULL)"
        );
        assert!(b.finish().is_none());
        b.push_row([Some(&b"3"[..]), Some(&b"c"[..])]);
        assert!(b.finish().is_some());
        assert_eq!(b.rows(), 3);
    }
}
