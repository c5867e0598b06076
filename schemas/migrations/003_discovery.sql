-- Schema discovery and usage (GoodLogs GET /v1/schema, GET /v1/info, GQL autocomplete),
-- kept up to date by the engine in the same insert as the rows, so a read never scans logs
-- or events. Rows are partial aggregates per insert block; readers merge them (sum(),
-- groupUniqArrayMerge()). Only data inserted after this migration is counted.

-- One row per (project, source, key):
--   source 'logs' / 'events': a property key (attributes / properties), its volume, how many of
--     its values read as numbers or booleans (the type), and up to 10 example values;
--   source 'event_names': an event name and its volume;
--   source 'log_levels' / 'log_services': a level or service value and its volume (autocomplete).
-- Volumes count what was received; they do not shrink when the TTL drops old rows.
CREATE TABLE IF NOT EXISTS schema_fields
(
    project     LowCardinality(String),
    source      LowCardinality(String),
    key         String,
    volume      SimpleAggregateFunction(sum, UInt64),
    numbers     SimpleAggregateFunction(sum, UInt64),
    booleans    SimpleAggregateFunction(sum, UInt64),
    examples    AggregateFunction(groupUniqArray(10), String),
    last_seen   SimpleAggregateFunction(max, DateTime64(9, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (project, source, key);

CREATE MATERIALIZED VIEW IF NOT EXISTS logs_schema_mv TO schema_fields AS
SELECT project, 'logs' AS source, k AS key, count() AS volume,
       countIf(isNotNull(toFloat64OrNull(v))) AS numbers, countIf(v IN ('true', 'false')) AS booleans,
       groupUniqArrayState(10)(leftUTF8(v, 200)) AS examples, max(timestamp) AS last_seen
FROM logs
ARRAY JOIN mapKeys(attributes) AS k, mapValues(attributes) AS v
GROUP BY project, key;

CREATE MATERIALIZED VIEW IF NOT EXISTS logs_values_mv TO schema_fields AS
SELECT project, kv.1 AS source, kv.2 AS key, count() AS volume, 0 AS numbers, 0 AS booleans,
       groupUniqArrayState(10)('') AS examples, max(timestamp) AS last_seen
FROM logs
ARRAY JOIN [('log_levels', toString(level)), ('log_services', toString(service))] AS kv
WHERE kv.2 != ''
GROUP BY project, source, key;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_schema_mv TO schema_fields AS
SELECT project, 'events' AS source, k AS key, count() AS volume,
       countIf(isNotNull(toFloat64OrNull(v))) AS numbers, countIf(v IN ('true', 'false')) AS booleans,
       groupUniqArrayState(10)(leftUTF8(v, 200)) AS examples, max(timestamp) AS last_seen
FROM events
ARRAY JOIN mapKeys(properties) AS k, mapValues(properties) AS v
GROUP BY project, key;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_names_mv TO schema_fields AS
SELECT project, 'event_names' AS source, toString(event) AS key, count() AS volume, 0 AS numbers,
       0 AS booleans, groupUniqArrayState(10)('') AS examples, max(timestamp) AS last_seen
FROM events
GROUP BY project, key;

-- Rows and bytes (the engine's uncompressed byteSize of each row) per project, table and
-- receive day, dropped with the same retention as the rows, so the sums are what is stored.
CREATE TABLE IF NOT EXISTS project_usage
(
    project     LowCardinality(String),
    source      LowCardinality(String),
    day         Date,
    rows        SimpleAggregateFunction(sum, UInt64),
    bytes       SimpleAggregateFunction(sum, UInt64)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, source, day)
TTL day + toIntervalDay(if(source = 'logs', 31, 91));

CREATE MATERIALIZED VIEW IF NOT EXISTS logs_usage_mv TO project_usage AS
SELECT project, 'logs' AS source, toDate(observed_timestamp) AS day, count() AS rows,
       sum(byteSize(timestamp, level, message, service, environment, host, trace_id, span_id, request_id,
                    session_id, user_id, tags, error_name, error_stack, attributes, client_ip)) AS bytes
FROM logs
GROUP BY project, day;

CREATE MATERIALIZED VIEW IF NOT EXISTS events_usage_mv TO project_usage AS
SELECT project, 'events' AS source, toDate(observed_timestamp) AS day, count() AS rows,
       sum(byteSize(timestamp, event, distinct_id, properties, client_ip)) AS bytes
FROM events
GROUP BY project, day;
