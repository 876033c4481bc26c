-- +goose Up

-- One row per file of the Parquet cold tier (internal/archive): the UTC day
-- whose rows of kind ('ticks' or 'candles') it holds, where it is, how many
-- rows it holds and how large it is. A row is written only once its file is
-- complete, verified against the database and in place, and rewritten when
-- the day is archived again.
CREATE TABLE IF NOT EXISTS archives (
    day         date        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('ticks', 'candles')),
    path        text        NOT NULL,
    rows        bigint      NOT NULL CHECK (rows >= 0),
    bytes       bigint      NOT NULL CHECK (bytes > 0),
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, kind)
);

-- +goose Down
DROP TABLE IF EXISTS archives;
