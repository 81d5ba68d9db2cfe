//! Rows of a batch as JSON messages, one per row or one per run of rows with the same key.

use super::publish::RowMessages;
use crate::error::Result;

/// Messages (key, payload) encoded from one batch, and the key of its last group, which may go
/// on in the next batch.
pub(super) type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

/// Encodes rows as JSON objects, grouping consecutive rows by key when asked.
pub(super) struct GroupEncoder<'a> {
    shape: &'a RowMessages,
    /// The open group: its key text and the items written so far.
    open: Option<(String, Vec<u8>)>,
}

impl<'a> GroupEncoder<'a> {
    pub(super) fn new(shape: &'a RowMessages) -> Self {
        GroupEncoder { shape, open: None }
    }

    pub(super) fn encode(&mut self, batch: &arrow::record_batch::RecordBatch) -> Result<Encoded> {
        use arrow::util::display::{ArrayFormatter, FormatOptions};
        let schema = batch.schema();
        let key_idx = schema.index_of(&self.shape.key)?;
        let opts = FormatOptions::default();
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut out = Encoded::new();
        for row in 0..batch.num_rows() {
            let key = formatters[key_idx].value(row).to_string();
            let mut obj = Vec::with_capacity(128);
            obj.push(b'{');
            let mut first = true;
            for (c, field) in schema.fields().iter().enumerate() {
                if self.shape.group && c == key_idx {
                    continue;
                }
                if !first {
                    obj.push(b',');
                }
                first = false;
                json_string(&mut obj, field.name());
                obj.push(b':');
                json_value(&mut obj, batch.column(c).as_ref(), &formatters[c], row);
            }
            if !self.shape.group {
                self.write_extra(&mut obj, first);
                obj.push(b'}');
                out.push((key.into_bytes(), obj));
                continue;
            }
            obj.push(b'}');
            match &mut self.open {
                Some((open_key, items)) if *open_key == key => {
                    items.push(b',');
                    items.extend_from_slice(&obj);
                }
                _ => {
                    if let Some(done) = self.close() {
                        out.push(done);
                    }
                    self.open = Some((key, obj));
                }
            }
        }
        Ok(out)
    }

    fn write_extra(&self, obj: &mut Vec<u8>, mut first: bool) {
        for (name, value) in &self.shape.extra {
            if !first {
                obj.push(b',');
            }
            first = false;
            json_string(obj, name);
            obj.push(b':');
            obj.extend_from_slice(value.to_string().as_bytes());
        }
    }

    /// The message of the open group, if any.
    fn close(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (key, items) = self.open.take()?;
        let mut msg = Vec::with_capacity(items.len() + 64);
        msg.push(b'{');
        json_string(&mut msg, &self.shape.key);
        msg.push(b':');
        // Keys are ids or codes: numbers stay numbers.
        if key.parse::<i64>().is_ok() {
            msg.extend_from_slice(key.as_bytes());
        } else {
            json_string(&mut msg, &key);
        }
        self.write_extra(&mut msg, false);
        msg.extend_from_slice(b",\"items\":[");
        msg.extend_from_slice(&items);
        msg.extend_from_slice(b"]}");
        Some((key.into_bytes(), msg))
    }

    pub(super) fn finish(mut self) -> Encoded {
        self.close().into_iter().collect()
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, without an intermediate String.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// One cell as JSON: numbers and booleans as such, text escaped, NaN and nulls as null, and
/// anything else (dates, timestamps, decimals) as its display text.
fn json_value(
    out: &mut Vec<u8>,
    col: &dyn arrow::array::Array,
    fmt: &arrow::util::display::ArrayFormatter<'_>,
    row: usize,
) {
    use arrow::datatypes::DataType::*;
    if col.is_null(row) {
        out.extend_from_slice(b"null");
        return;
    }
    let text = fmt.value(row).to_string();
    match col.data_type() {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Boolean => {
            out.extend_from_slice(text.as_bytes())
        }
        Float16 | Float32 | Float64 => {
            if text.parse::<f64>().is_ok_and(f64::is_finite) {
                out.extend_from_slice(text.as_bytes())
            } else {
                out.extend_from_slice(b"null")
            }
        }
        _ => json_string(out, &text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recommendations() -> arrow::record_batch::RecordBatch {
        use arrow::array::{Float32Array, Int32Array, Int64Array, StringArray};
        use std::sync::Arc;
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Int64, false),
            arrow::datatypes::Field::new("rank", arrow::datatypes::DataType::Int32, false),
            arrow::datatypes::Field::new("score", arrow::datatypes::DataType::Float32, true),
            arrow::datatypes::Field::new("why", arrow::datatypes::DataType::Utf8, true),
        ]));
        arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![7, 7, 9])),
                Arc::new(Int32Array::from(vec![1, 2, 1])),
                Arc::new(Float32Array::from(vec![Some(0.5), Some(f32::NAN), None])),
                Arc::new(StringArray::from(vec![Some("a \"b\""), None, Some("c")])),
            ],
        )
        .unwrap()
    }

    fn as_json(messages: &Encoded) -> Vec<(String, serde_json::Value)> {
        messages
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8(k.clone()).unwrap(),
                    serde_json::from_slice(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_become_one_json_message_each() {
        let shape = RowMessages {
            key: "user_id".into(),
            group: false,
            extra: vec![("date".into(), "2026-11-26".into())],
        };
        let mut enc = GroupEncoder::new(&shape);
        let got = as_json(&enc.encode(&recommendations()).unwrap());
        assert!(enc.finish().is_empty());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, "7");
        assert_eq!(
            got[0].1,
            serde_json::json!({"user_id": 7, "rank": 1, "score": 0.5, "why": "a \"b\"", "date": "2026-11-26"})
        );
        assert_eq!(
            got[1].1["score"],
            serde_json::Value::Null,
            "NaN is not JSON"
        );
        assert_eq!(got[2].1["why"], "c");
    }

    #[test]
    fn grouped_rows_make_one_message_per_key_across_batches() {
        let shape = RowMessages {
            key: "user_id".into(),
            group: true,
            extra: vec![],
        };
        let mut enc = GroupEncoder::new(&shape);
        let batch = recommendations();
        let mut all = enc.encode(&batch.slice(0, 1)).unwrap();
        all.extend(enc.encode(&batch.slice(1, 2)).unwrap());
        all.extend(enc.finish());
        let got = as_json(&all);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "7");
        assert_eq!(got[0].1["user_id"], 7);
        assert_eq!(got[0].1["items"].as_array().unwrap().len(), 2);
        assert_eq!(got[0].1["items"][1]["rank"], 2);
        assert!(got[0].1["items"][0].get("user_id").is_none());
        assert_eq!(got[1].1["items"].as_array().unwrap().len(), 1);
    }
}
