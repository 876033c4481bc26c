-- +goose Up

-- The processor writes a partition's analytics state every few seconds, not
-- with every batch (for thousands of symbols it is megabytes). state_offset
-- is the offset that state stands at: a restart restores it and replays the
-- records from there to next_offset, whose rows are all stored already
-- (every write is idempotent). NULL means the state stands at next_offset,
-- as every row written before this column existed did.
ALTER TABLE consumer_offsets ADD COLUMN state_offset bigint CHECK (state_offset >= 0);

-- +goose Down
ALTER TABLE consumer_offsets DROP COLUMN state_offset;
