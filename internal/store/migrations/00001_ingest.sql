-- +goose Up

-- Raw ticks, one row per (symbol, seq). Not range-partitioned by day: a
-- partitioned table can only enforce unique keys that include the partition
-- column, and (symbol, seq) without ts is what makes a replayed tick a
-- duplicate. Retention deletes old rows in batches instead of dropping
-- partitions.
CREATE TABLE ticks (
    symbol          text             NOT NULL CHECK (symbol ~ '^[A-Z][A-Z0-9.-]{0,11}$'),
    seq             bigint           NOT NULL CHECK (seq > 0),
    ts              timestamptz      NOT NULL,
    -- 'NaN' sorts above every number in PostgreSQL, so "< 'Infinity'" also
    -- rules it out.
    price           double precision NOT NULL CHECK (price > 0 AND price < 'Infinity'),
    size            bigint           NOT NULL CHECK (size > 0),
    bid             double precision NOT NULL CHECK (bid > 0 AND bid < 'Infinity'),
    ask             double precision NOT NULL CHECK (ask > 0 AND ask < 'Infinity'),
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT ticks_bid_le_ask CHECK (bid <= ask),
    PRIMARY KEY (symbol, seq)
);
CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts);
-- Retention deletes by ts across symbols; a BRIN index finds old rows
-- cheaply because ts grows with insertion order.
CREATE INDEX ticks_ts_brin ON ticks USING brin (ts);

-- Records that were not valid ticks, with why. The same rows go to the
-- ticks.dlq topic.
CREATE TABLE rejected_ticks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    key         bytea,
    raw         bytea,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX rejected_ticks_received_at ON rejected_ticks (received_at);

-- Where each consumer group is in each partition, committed in the same
-- transaction as the rows that offset covers. state holds the processor's
-- per-partition snapshot (forming candles, indicator and detector state) so
-- that a restart resumes exactly.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL CHECK (next_offset >= 0),
    state       bytea,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- +goose Down
DROP TABLE consumer_offsets;
DROP TABLE rejected_ticks;
DROP TABLE ticks;
