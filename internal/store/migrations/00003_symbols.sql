-- +goose Up

-- Every symbol the stream has seen, so that listing them does not scan the
-- ticks or candles.
CREATE TABLE symbols (
    symbol     text        PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
INSERT INTO symbols (symbol) SELECT DISTINCT symbol FROM candles ON CONFLICT DO NOTHING;

-- +goose Down
DROP TABLE symbols;
