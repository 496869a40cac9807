//! One day of one organization as a Parquet file: the indexed fields as columns beside
//! the original JSON, zstd, one row group, rows sorted by (timestamp, seq).

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tfaudit_store::StoredEvent;

use crate::ColdError;

/// The columns, in order, as the README documents them.
pub const COLUMNS: [&str; 15] = [
    "seq",
    "organization",
    "organization_id",
    "id",
    "timestamp",
    "ingested_at",
    "auth_type",
    "accessor_id",
    "auth_description",
    "impersonator_id",
    "request_id",
    "resource_id",
    "resource_type",
    "resource_action",
    "raw",
];

fn schema() -> Arc<Schema> {
    let utc = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        text("organization", false),
        text("organization_id", true),
        text("id", false),
        Field::new("timestamp", utc(), false),
        Field::new("ingested_at", utc(), false),
        text("auth_type", true),
        text("accessor_id", true),
        text("auth_description", true),
        text("impersonator_id", true),
        text("request_id", true),
        text("resource_id", true),
        text("resource_type", true),
        text("resource_action", true),
        text("raw", false),
    ]))
}

/// Writes `events` (one organization's, one day's) as a Parquet file. They are sorted
/// here by (timestamp, seq), the order the archive reads them in, so that a file's
/// bytes depend only on its events.
///
/// # Errors
/// [`ColdError::Encode`] if Arrow or Parquet refuse the data (a bug).
pub fn encode_day(organization: &str, events: &mut [StoredEvent]) -> Result<Vec<u8>, ColdError> {
    events.sort_by_key(|e| (e.event.timestamp, e.seq));
    let rows = events.len();
    let bytes: usize = events.iter().map(|e| e.event.raw.len()).sum();
    let mut seq = Int64Builder::with_capacity(rows);
    let mut timestamp = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut ingested_at = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let text = || StringBuilder::with_capacity(rows, rows * 16);
    let (mut org, mut org_id, mut id, mut auth_type, mut accessor, mut description) =
        (text(), text(), text(), text(), text(), text());
    let (mut impersonator, mut request, mut resource_id, mut resource_type, mut action) =
        (text(), text(), text(), text(), text());
    let mut raw = StringBuilder::with_capacity(rows, bytes);
    for e in events.iter() {
        let a = &e.event;
        seq.append_value(e.seq);
        org.append_value(organization);
        org_id.append_option(a.organization_id.as_deref());
        id.append_value(&a.id);
        timestamp.append_value(a.timestamp.as_millisecond());
        ingested_at.append_value(e.ingested_at.as_millisecond());
        auth_type.append_option(a.auth_type.as_deref());
        accessor.append_option(a.accessor_id.as_deref());
        description.append_option(a.auth_description.as_deref());
        impersonator.append_option(a.impersonator_id.as_deref());
        request.append_option(a.request_id.as_deref());
        resource_id.append_option(a.resource_id.as_deref());
        resource_type.append_option(a.resource_type.as_deref());
        action.append_option(a.resource_action.as_deref());
        raw.append_value(&a.raw);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(seq.finish()),
        Arc::new(org.finish()),
        Arc::new(org_id.finish()),
        Arc::new(id.finish()),
        Arc::new(timestamp.finish()),
        Arc::new(ingested_at.finish()),
        Arc::new(auth_type.finish()),
        Arc::new(accessor.finish()),
        Arc::new(description.finish()),
        Arc::new(impersonator.finish()),
        Arc::new(request.finish()),
        Arc::new(resource_id.finish()),
        Arc::new(resource_type.finish()),
        Arc::new(action.finish()),
        Arc::new(raw.finish()),
    ];
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| ColdError::Encode(e.to_string()))?;
    let level = ZstdLevel::try_new(3).map_err(|e| ColdError::Encode(e.to_string()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        // One row group per day, however many events it holds.
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(None)
        .set_created_by(format!("tfaudit {}", env!("CARGO_PKG_VERSION")))
        // Unique per event: a dictionary would only be built to be thrown away.
        .set_column_dictionary_enabled(ColumnPath::from("id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("raw"), false)
        .set_column_dictionary_enabled(ColumnPath::from("request_id"), false)
        .build();
    let mut out = Vec::with_capacity(bytes / 4 + 4096);
    let mut writer =
        ArrowWriter::try_new(&mut out, schema, Some(properties)).map_err(|e| ColdError::Encode(e.to_string()))?;
    writer.write(&batch).map_err(|e| ColdError::Encode(e.to_string()))?;
    writer.close().map_err(|e| ColdError::Encode(e.to_string()))?;
    Ok(out)
}

/// Reads a day's Parquet file back into events: each with its seq, organization (the
/// source name) and ingest time, and the event parsed again from its original bytes,
/// as a sync parses it.
///
/// # Errors
/// [`ColdError::Copy`] when the file is not one [`encode_day`] wrote or an event in it
/// does not parse.
pub fn decode_day(bytes: bytes::Bytes) -> Result<Vec<StoredEvent>, ColdError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |why: String| ColdError::Copy(format!("not a day file tfaudit wrote: {why}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| bad(e.to_string()))?;
    let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
    if names != COLUMNS {
        return Err(bad(format!("its columns are {}", names.join(", "))));
    }
    let column = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
    let (seq, org, ingested, raw) = (column("seq"), column("organization"), column("ingested_at"), column("raw"));
    let mut events = Vec::new();
    for batch in reader.build().map_err(|e| bad(e.to_string()))? {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let seqs = batch.column(seq).as_primitive_opt::<Int64Type>().ok_or_else(|| bad("seq".into()))?;
        let orgs = batch.column(org).as_string_opt::<i32>().ok_or_else(|| bad("organization".into()))?;
        let times = batch
            .column(ingested)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| bad("ingested_at".into()))?;
        let raws = batch.column(raw).as_string_opt::<i32>().ok_or_else(|| bad("raw".into()))?;
        for row in 0..batch.num_rows() {
            // Read as JSON once, as the event (text that is not JSON is refused there).
            let event = tfaudit_model::AuditEvent::parse_owned(raws.value(row).to_owned())
                .map_err(|r| bad(format!("the event at seq {}: {}", seqs.value(row), r.reason)))?;
            events.push(StoredEvent {
                seq: seqs.value(row),
                source: orgs.value(row).to_owned(),
                ingested_at: jiff::Timestamp::from_millisecond(times.value(row)).map_err(|e| bad(e.to_string()))?,
                event,
            });
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMillisecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn event(seq: i64, id: &str, ts: &str, raw: &str) -> StoredEvent {
        let event = tfaudit_model::AuditEvent {
            id: id.into(),
            timestamp: ts.parse().unwrap(),
            organization_id: Some("org-1".into()),
            auth_type: None,
            accessor_id: raw.contains("user-1").then(|| "user-1".into()),
            auth_description: None,
            impersonator_id: None,
            request_id: None,
            resource_id: None,
            resource_type: None,
            resource_action: None,
            raw: raw.into(),
            named: Default::default(),
        };
        StoredEvent { seq, source: "acme".into(), ingested_at: "2026-12-02T10:00:00.123Z".parse().unwrap(), event }
    }

    #[test]
    fn a_day_reads_back_sorted_by_time_then_seq_with_raw_exact() {
        let raw_b = "{\"id\":\"b\",\"timestamp\":\"2026-11-05T10:00:00Z\",\"x\":\"é\\u0000 \\n\",  \"version\":\"0\"}";
        let raw_a = r#"{"id":"a","timestamp":"2026-11-05T09:00:00Z","auth":{"accessor_id":"user-1","type":"Client"},"resource":{"type":"workspace","action":"create"}}"#;
        let raw_c = r#"{"id":"c","timestamp":"2026-11-05T10:00:00Z"}"#;
        let mut events = vec![
            event(9, "b", "2026-11-05T10:00:00Z", raw_b),
            event(12, "c", "2026-11-05T10:00:00Z", raw_c),
            event(20, "a", "2026-11-05T09:00:00Z", raw_a),
        ];
        let bytes = encode_day("acme", &mut events).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata().clone();
        assert_eq!(meta.num_row_groups(), 1);
        let chunk = meta.row_group(0).column(0);
        assert!(matches!(chunk.compression(), Compression::ZSTD(_)), "{:?}", chunk.compression());
        let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, COLUMNS);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let batch = &batches[0];
        let seqs: Vec<i64> = batch.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(seqs, [20, 9, 12], "by time, then seq");
        let ids: Vec<&str> = batch.column(3).as_string::<i32>().iter().map(Option::unwrap).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        let raws: Vec<&str> = batch.column(14).as_string::<i32>().iter().map(Option::unwrap).collect();
        assert_eq!(raws, [raw_a, raw_b, raw_c]);
        let ts = batch.column(4).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), "2026-11-05T09:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond());
        assert_eq!(ts.timezone(), Some("UTC"));
        let ingested = batch.column(5).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ingested.value(1) % 1000, 123);
        let accessor = batch.column(7).as_string::<i32>();
        assert_eq!(accessor.value(0), "user-1");
        assert!(accessor.is_null(1), "an absent field is null");
        assert_eq!(batch.column(1).as_string::<i32>().value(2), "acme");
    }

    #[test]
    fn a_day_decodes_back_to_the_same_events() {
        let raw_a = r#"{"id":"a","timestamp":"2026-11-05T09:00:00Z","auth":{"accessor_id":"user-1","type":"Client"},"resource":{"type":"workspace","action":"create"}}"#;
        let raw_b = "{\"id\":\"b\",\"timestamp\":\"2026-11-05T10:00:00Z\",\"x\":\"é\\u0000 \\n\",  \"version\":\"0\"}";
        let parsed = |seq: i64, raw: &str| {
            let value = serde_json::value::RawValue::from_string(raw.to_owned()).unwrap();
            StoredEvent {
                seq,
                source: "acme".into(),
                ingested_at: "2026-12-02T10:00:00.123Z".parse().unwrap(),
                event: tfaudit_model::AuditEvent::parse(&value).unwrap(),
            }
        };
        let mut events = vec![parsed(9, raw_b), parsed(20, raw_a)];
        let bytes = encode_day("acme", &mut events).unwrap();
        let back = decode_day(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(back, events, "sorted by time, every field as archived");
        let e = decode_day(bytes::Bytes::from_static(b"PAR1 not parquet")).unwrap_err().to_string();
        assert!(e.contains("not a day file tfaudit wrote"), "{e}");
    }
}
