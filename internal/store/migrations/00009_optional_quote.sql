-- +goose NO TRANSACTION
-- +goose Up

-- bid and ask are optional, both or neither: trade-only feeds (Finnhub, an
-- Alpaca trade before its symbol's first quote) have no quote, and such a
-- tick is stored with both NULL. The column checks from 00001 stay as they
-- are and still mean what they did for a tick with a quote: a CHECK passes
-- on NULL, so bid > 0, ask > 0, both finite and bid <= ask hold whenever
-- the quote is there. ticks_quote_whole rules out half a quote, which the
-- processor rejects (bad_quote) before it gets here.
--
-- Not in one transaction, so that the new check's scan of what may be tens
-- of millions of rows does not hold up the processors' commits: it is added
-- NOT VALID (a change of the catalog only, under a brief exclusive lock) and
-- validated by a statement of its own, whose lock lets writes go on. Each
-- statement can be run again, should the migration be cut off half-way.
ALTER TABLE ticks ALTER COLUMN bid DROP NOT NULL, ALTER COLUMN ask DROP NOT NULL;
ALTER TABLE ticks
    DROP CONSTRAINT IF EXISTS ticks_quote_whole,
    ADD CONSTRAINT ticks_quote_whole CHECK ((bid IS NULL) = (ask IS NULL)) NOT VALID;
ALTER TABLE ticks VALIDATE CONSTRAINT ticks_quote_whole;

-- +goose Down
-- Every tick must have a quote again: those without one are deleted, since
-- no quote can be made up for them.
DELETE FROM ticks WHERE bid IS NULL OR ask IS NULL;
ALTER TABLE ticks
    DROP CONSTRAINT IF EXISTS ticks_quote_whole,
    ALTER COLUMN bid SET NOT NULL,
    ALTER COLUMN ask SET NOT NULL;
