-- The canonical log record (schemas/record.py). Anchored on the OpenTelemetry exporter's
-- otel_logs and ClickStack's logs table, re-keyed for "one project, recent time, maybe
-- one service": the tenant leads the sort key so a project's rows are contiguous.
CREATE TABLE IF NOT EXISTS logs
(
    project             LowCardinality(String) CODEC(ZSTD(1)),
    timestamp           DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    observed_timestamp  DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    level               LowCardinality(String) CODEC(ZSTD(1)),
    severity_text       LowCardinality(String) CODEC(ZSTD(1)),
    severity_number     UInt8 CODEC(ZSTD(1)),
    message             String CODEC(ZSTD(1)),
    service             LowCardinality(String) CODEC(ZSTD(1)),
    environment         LowCardinality(String) CODEC(ZSTD(1)),
    host                LowCardinality(String) CODEC(ZSTD(1)),
    dataset             LowCardinality(String) CODEC(ZSTD(1)),
    trace_id            String CODEC(ZSTD(1)),
    span_id             String CODEC(ZSTD(1)),
    request_id          String CODEC(ZSTD(1)),
    session_id          String CODEC(ZSTD(1)),
    user_id             String CODEC(ZSTD(1)),
    flow_id             String CODEC(ZSTD(1)),
    tags                Array(LowCardinality(String)) CODEC(ZSTD(1)),
    entity_name         LowCardinality(String) CODEC(ZSTD(1)),
    entity_kind         LowCardinality(String) CODEC(ZSTD(1)),
    entity_tags         Array(LowCardinality(String)) CODEC(ZSTD(1)),
    error_name          String CODEC(ZSTD(1)),
    error_stack         String CODEC(ZSTD(1)),
    attributes          Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ua_browser          LowCardinality(String) CODEC(ZSTD(1)),
    ua_os               LowCardinality(String) CODEC(ZSTD(1)),
    ua_device           LowCardinality(String) CODEC(ZSTD(1)),
    client_ip           String CODEC(ZSTD(1)),
    dialect             LowCardinality(String) CODEC(ZSTD(1)),
    ingest_id           String CODEC(ZSTD(1)),
    kafka_topic         LowCardinality(String) CODEC(ZSTD(1)),
    kafka_partition     UInt32 CODEC(ZSTD(1)),
    kafka_offset        UInt64 CODEC(Delta(8), ZSTD(1)),
    -- Filled by the engine at insert: observed_timestamp -> inserted_at is the pipeline's lag.
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta(8), ZSTD(1)),
    INDEX idx_message message TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX idx_attr_keys mapKeys(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_attr_values mapValues(attributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    -- Event-time pruning that the partition key no longer gives (live logs: receive day ~ event day).
    INDEX idx_timestamp timestamp TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
-- By receive day, not event day: all rows of one Kafka message share observed_timestamp, so
-- each message lands in one part, atomically (the worker's crash recovery relies on it),
-- back-fills do not scatter an insert over many partitions, and the TTL drops whole parts.
PARTITION BY toDate(observed_timestamp)
ORDER BY (project, service, timestamp)
-- Retention counts from when Millrace received a log, so back-filled old logs are kept.
TTL toDateTime(observed_timestamp) + INTERVAL 30 DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1,
         -- Lets a redelivered batch (same insert_deduplication_token) be dropped by the engine.
         non_replicated_deduplication_window = 10000;

-- Highest Kafka offset stored per table and partition, maintained by the engine in the same
-- insert as the rows: after a crash between insert and offset commit the worker seeks
-- past what is already stored instead of inserting it again.
CREATE TABLE IF NOT EXISTS ingest_watermarks
(
    target           LowCardinality(String),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    max_offset       SimpleAggregateFunction(max, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (target, kafka_topic, kafka_partition);

CREATE MATERIALIZED VIEW IF NOT EXISTS logs_watermarks_mv TO ingest_watermarks AS
SELECT 'logs' AS target, kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM logs
GROUP BY kafka_topic, kafka_partition;
