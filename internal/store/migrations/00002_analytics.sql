-- +goose Up

-- OHLCV candles with their indicators. The stream upserts the forming
-- candle as it changes (final = false) and writes it a last time when the
-- watermark passes its end (final = true); the scheduler writes '1d'.
-- Indicators are over the closes of the same interval's candles and NULL
-- until enough closes exist.
CREATE TABLE candles (
    symbol     text             NOT NULL,
    interval   text             NOT NULL CHECK (interval IN ('1m', '5m', '1d')),
    bucket     timestamptz      NOT NULL,
    open       double precision NOT NULL,
    high       double precision NOT NULL,
    low        double precision NOT NULL,
    close      double precision NOT NULL,
    volume     bigint           NOT NULL CHECK (volume >= 0),
    vwap       double precision,
    trades     bigint           NOT NULL CHECK (trades >= 0),
    sma_5      double precision,
    sma_20     double precision,
    ema_12     double precision,
    ema_26     double precision,
    bb_upper   double precision,
    bb_lower   double precision,
    rsi_14     double precision,
    final      boolean          NOT NULL DEFAULT false,
    updated_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, interval, bucket),
    CONSTRAINT candles_ohlc CHECK (low <= least(open, close) AND high >= greatest(open, close))
);

-- Detected anomalies; one per (symbol, ts, kind) however often the stream
-- that found it is replayed.
CREATE TABLE anomalies (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    symbol      text             NOT NULL,
    ts          timestamptz      NOT NULL,
    kind        text             NOT NULL,
    severity    text             NOT NULL CHECK (severity IN ('low', 'medium', 'high')),
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    detail      text             NOT NULL,
    detected_at timestamptz      NOT NULL DEFAULT now(),
    UNIQUE (symbol, ts, kind)
);
CREATE INDEX anomalies_ts ON anomalies (ts DESC);

-- +goose Down
DROP TABLE anomalies;
DROP TABLE candles;
