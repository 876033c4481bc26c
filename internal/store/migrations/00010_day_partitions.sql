-- +goose Up

-- ticks and rejected_ticks become range-partitioned by UTC day, one
-- partition per day named ticks_pYYYYMMDD / rejected_ticks_pYYYYMMDD, so
-- that retention drops whole days instead of deleting rows.
--
-- A unique key of a partitioned table must hold the partition column:
--
--   ticks: PRIMARY KEY (symbol, ts, seq). A resend of a tick carries its ts,
--   so it still conflicts; the key also serves each symbol's time-range
--   reads, and partition pruning replaces the BRIN index on ts. A record
--   with a stored (symbol, seq) but another ts is no longer a duplicate to
--   the database (the processor's in-memory window still drops it).
--
--   rejected_ticks: partitioned by record_ts, the Kafka record's timestamp,
--   which every delivery of the same record carries, so that
--   UNIQUE (topic, partition, "offset", record_ts) keeps a record
--   re-delivered after a crash from being stored twice. received_at (now())
--   would differ between deliveries. Rows from before have record_ts =
--   received_at.
--
-- The columns of ticks are ordered for alignment, 8-byte ones first and the
-- text last, so that no padding is stored.
--
-- One transaction: the tables are copied into the new layout and swapped,
-- every row kept. Writers wait from the first statement on; readers until
-- the swap.
LOCK TABLE ticks, rejected_ticks IN EXCLUSIVE MODE;

CREATE TABLE ticks_new (
    ts              timestamptz      NOT NULL,
    seq             bigint           NOT NULL CONSTRAINT ticks_seq_check CHECK (seq > 0),
    -- 'NaN' sorts above every number in PostgreSQL, so "< 'Infinity'" also
    -- rules it out.
    price           double precision NOT NULL CONSTRAINT ticks_price_check CHECK (price > 0 AND price < 'Infinity'),
    size            bigint           NOT NULL CONSTRAINT ticks_size_check CHECK (size > 0),
    -- Both or neither (see 00009); a CHECK passes on NULL.
    bid             double precision CONSTRAINT ticks_bid_check CHECK (bid > 0 AND bid < 'Infinity'),
    ask             double precision CONSTRAINT ticks_ask_check CHECK (ask > 0 AND ask < 'Infinity'),
    kafka_offset    bigint           NOT NULL,
    -- When the tick was stored: the pipeline_health DAG's tick_age.
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    kafka_partition integer          NOT NULL,
    symbol          text             NOT NULL CONSTRAINT ticks_symbol_check CHECK (symbol ~ '^[A-Z][A-Z0-9.-]{0,11}$'),
    CONSTRAINT ticks_bid_le_ask CHECK (bid <= ask),
    CONSTRAINT ticks_quote_whole CHECK ((bid IS NULL) = (ask IS NULL))
) PARTITION BY RANGE (ts);

CREATE TABLE rejected_ticks_new (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    key         bytea,
    raw         bytea,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- The processor always sets it; the default is for rows written by
    -- hand, which then land in the day they are written.
    record_ts   timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (record_ts);

-- The partitions the rows need, and the day before and the two days after
-- the present (the processor also creates any it lacks, see
-- store.EnsureDays).
-- +goose StatementBegin
DO $$
DECLARE
    t text;
    d date;
BEGIN
    FOR t, d IN
        SELECT 'ticks'::text, (ts AT TIME ZONE 'UTC')::date FROM ticks
        UNION
        SELECT 'rejected_ticks'::text, (received_at AT TIME ZONE 'UTC')::date FROM rejected_ticks
        UNION
        SELECT tt, (now() AT TIME ZONE 'UTC')::date + i
        FROM unnest(ARRAY['ticks', 'rejected_ticks']) tt, generate_series(-1, 2) i
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            t || '_p' || to_char(d, 'YYYYMMDD'), t || '_new',
            to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00', to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    END LOOP;
END
$$;
-- +goose StatementEnd

INSERT INTO ticks_new (ts, seq, price, size, bid, ask, kafka_offset, ingested_at, kafka_partition, symbol)
SELECT ts, seq, price, size, bid, ask, kafka_offset, ingested_at, kafka_partition, symbol FROM ticks;

INSERT INTO rejected_ticks_new (id, topic, partition, "offset", reason, detail, key, raw, received_at, record_ts)
OVERRIDING SYSTEM VALUE
SELECT id, topic, partition, "offset", reason, detail, key, raw, received_at, received_at FROM rejected_ticks;

-- +goose StatementBegin
DO $$
BEGIN
    IF (SELECT count(*) FROM ticks_new) <> (SELECT count(*) FROM ticks)
       OR (SELECT count(*) FROM rejected_ticks_new) <> (SELECT count(*) FROM rejected_ticks) THEN
        RAISE EXCEPTION 'copying ticks and rejected_ticks into day partitions lost rows';
    END IF;
END
$$;
-- +goose StatementEnd

-- New ids go on from where the old ones were, deleted ones included.
SELECT setval('rejected_ticks_new_id_seq', last_value, is_called) FROM rejected_ticks_id_seq;

DROP TABLE ticks;
DROP TABLE rejected_ticks;
ALTER TABLE ticks_new RENAME TO ticks;
ALTER TABLE rejected_ticks_new RENAME TO rejected_ticks;
ALTER SEQUENCE rejected_ticks_new_id_seq RENAME TO rejected_ticks_id_seq;

-- Keys and indexes last: each partition's is built in one sort of its rows.
ALTER TABLE ticks ADD CONSTRAINT ticks_pkey PRIMARY KEY (symbol, ts, seq);
ALTER TABLE rejected_ticks
    ADD CONSTRAINT rejected_ticks_pkey PRIMARY KEY (id, record_ts),
    ADD CONSTRAINT rejected_ticks_record_key UNIQUE (topic, partition, "offset", record_ts);
-- The pipeline_health and market_close DAGs count rejections by when they
-- were received.
CREATE INDEX rejected_ticks_received_at ON rejected_ticks (received_at);

-- +goose Down

-- Back to one table each, with the keys of 00001 (and 00009's optional
-- quote). A (symbol, seq) stored more than once, with different ts, keeps
-- its first stored row; a Kafka record stored more than once, its first.
LOCK TABLE ticks, rejected_ticks IN EXCLUSIVE MODE;

CREATE TABLE ticks_old (
    symbol          text             NOT NULL CONSTRAINT ticks_symbol_check CHECK (symbol ~ '^[A-Z][A-Z0-9.-]{0,11}$'),
    seq             bigint           NOT NULL CONSTRAINT ticks_seq_check CHECK (seq > 0),
    ts              timestamptz      NOT NULL,
    price           double precision NOT NULL CONSTRAINT ticks_price_check CHECK (price > 0 AND price < 'Infinity'),
    size            bigint           NOT NULL CONSTRAINT ticks_size_check CHECK (size > 0),
    bid             double precision CONSTRAINT ticks_bid_check CHECK (bid > 0 AND bid < 'Infinity'),
    ask             double precision CONSTRAINT ticks_ask_check CHECK (ask > 0 AND ask < 'Infinity'),
    kafka_partition integer          NOT NULL,
    kafka_offset    bigint           NOT NULL,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT ticks_bid_le_ask CHECK (bid <= ask),
    CONSTRAINT ticks_quote_whole CHECK ((bid IS NULL) = (ask IS NULL))
);
INSERT INTO ticks_old (symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at)
SELECT DISTINCT ON (symbol, seq) symbol, seq, ts, price, size, bid, ask, kafka_partition, kafka_offset, ingested_at
FROM ticks ORDER BY symbol, seq, ingested_at, kafka_partition, kafka_offset;

CREATE TABLE rejected_ticks_old (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    key         bytea,
    raw         bytea,
    received_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rejected_ticks_old (id, topic, partition, "offset", reason, detail, key, raw, received_at)
OVERRIDING SYSTEM VALUE
SELECT DISTINCT ON (topic, partition, "offset") id, topic, partition, "offset", reason, detail, key, raw, received_at
FROM rejected_ticks ORDER BY topic, partition, "offset", id;

SELECT setval('rejected_ticks_old_id_seq', last_value, is_called) FROM rejected_ticks_id_seq;

DROP TABLE ticks;
DROP TABLE rejected_ticks;
ALTER TABLE ticks_old RENAME TO ticks;
ALTER TABLE rejected_ticks_old RENAME TO rejected_ticks;
ALTER SEQUENCE rejected_ticks_old_id_seq RENAME TO rejected_ticks_id_seq;

ALTER TABLE ticks ADD CONSTRAINT ticks_pkey PRIMARY KEY (symbol, seq);
CREATE INDEX ticks_symbol_ts ON ticks (symbol, ts);
CREATE INDEX ticks_ts_brin ON ticks USING brin (ts);
ALTER TABLE rejected_ticks
    ADD CONSTRAINT rejected_ticks_pkey PRIMARY KEY (id),
    ADD CONSTRAINT rejected_ticks_topic_partition_offset_key UNIQUE (topic, partition, "offset");
CREATE INDEX rejected_ticks_received_at ON rejected_ticks (received_at);
