-- Product-analytics events (GoodLogs POST /v1/events): their own table, keyed for
-- "one project, one event name, recent time".
CREATE TABLE IF NOT EXISTS events
(
    project             LowCardinality(String) CODEC(ZSTD(1)),
    timestamp           DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    observed_timestamp  DateTime64(9, 'UTC') CODEC(Delta(8), ZSTD(1)),
    event               LowCardinality(String) CODEC(ZSTD(1)),
    distinct_id         String CODEC(ZSTD(1)),
    properties          Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ua_browser          LowCardinality(String) CODEC(ZSTD(1)),
    ua_os               LowCardinality(String) CODEC(ZSTD(1)),
    ua_device           LowCardinality(String) CODEC(ZSTD(1)),
    client_ip           String CODEC(ZSTD(1)),
    dialect             LowCardinality(String) CODEC(ZSTD(1)),
    ingest_id           String CODEC(ZSTD(1)),
    kafka_topic         LowCardinality(String) CODEC(ZSTD(1)),
    kafka_partition     UInt32 CODEC(ZSTD(1)),
    kafka_offset        UInt64 CODEC(Delta(8), ZSTD(1)),
    inserted_at         DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta(8), ZSTD(1)),
    INDEX idx_distinct_id distinct_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_prop_keys mapKeys(properties) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_prop_values mapValues(properties) TYPE bloom_filter(0.01) GRANULARITY 1,
    -- Event-time pruning that the partition key no longer gives (live logs: receive day ~ event day).
    INDEX idx_timestamp timestamp TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
-- By receive day, not event day: all rows of one Kafka message share observed_timestamp, so
-- each message lands in one part, atomically (the worker's crash recovery relies on it),
-- back-fills do not scatter an insert over many partitions, and the TTL drops whole parts.
PARTITION BY toDate(observed_timestamp)
ORDER BY (project, event, timestamp)
TTL toDateTime(observed_timestamp) + INTERVAL 90 DAY
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1, non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_watermarks_mv TO ingest_watermarks AS
SELECT 'events' AS target, kafka_topic, kafka_partition, max(kafka_offset) AS max_offset
FROM events
GROUP BY kafka_topic, kafka_partition;
