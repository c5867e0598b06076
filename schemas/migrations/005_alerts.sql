-- Alerts (GoodLogs /v1/alerts, GQL from:alert_events): rules, the evaluator's state, the
-- timeline of transitions and the webhook attempts. Small tables, written by the rules API
-- and the evaluator (alerts/), read with FINAL where a row is replaced.

-- One row per version of a rule; the highest `version` wins, `deleted` hides a rule.
-- `body` is the rule as the API shows it (JSON, webhook secrets included: never shown).
CREATE TABLE IF NOT EXISTS alert_rules
(
    project     LowCardinality(String),
    id          String,
    version     UInt64,
    deleted     UInt8,
    body        String,
    updated_at  DateTime64(9, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, id);

-- Where each (rule, group) stands: its state, since when, and how many transitions it made
-- (`seq`: the next event's number, so a re-evaluation after a crash finds the same event id).
CREATE TABLE IF NOT EXISTS alert_state
(
    project     LowCardinality(String),
    rule_id     String,
    group_key   String,
    state       LowCardinality(String),
    since       DateTime64(9, 'UTC'),
    seq         UInt64,
    value       Float64,
    version     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (project, rule_id, group_key);

-- One row per transition. The id is derived from (rule, group, seq): the same transition
-- written twice (a crash between this insert and the state's) is one row under FINAL.
CREATE TABLE IF NOT EXISTS alert_events
(
    project         LowCardinality(String),
    timestamp       DateTime64(9, 'UTC'),
    event_id        String,
    rule_id         String,
    rule_name       String,
    group_key       String,
    state           LowCardinality(String),
    previous_state  LowCardinality(String),
    value           Float64,
    op              LowCardinality(String),
    threshold       Float64,
    seq             UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, event_id)
TTL toDateTime(timestamp) + INTERVAL 90 DAY;

-- Every webhook attempt: its outcome ('retrying', 'delivered', 'failed'), HTTP status, error.
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    project         LowCardinality(String),
    rule_id         String,
    event_id        String,
    url             String,
    attempt         UInt32,
    outcome         LowCardinality(String),
    status          UInt16,
    error           String,
    attempted_at    DateTime64(9, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(attempted_at)
ORDER BY (project, rule_id, attempted_at)
TTL toDateTime(attempted_at) + INTERVAL 30 DAY;
