package market

// Reason is the stable, machine-readable cause of a rejected record. It is
// what the dead-letter topic's "error" header, the rejected_ticks.reason
// column and the rejected-by-reason metric carry; Rejection.Detail says the
// rest in words.
type Reason string

// Reasons a record is rejected. Each names one rule so that a count by reason
// tells an operator which producer bug to look for.
const (
	ReasonEmpty         Reason = "empty"          // no bytes (or a tombstone)
	ReasonTooLarge      Reason = "too_large"      // payload over MaxPayload
	ReasonInvalidUTF8   Reason = "invalid_utf8"   // bytes are not UTF-8
	ReasonMalformedJSON Reason = "malformed_json" // not a JSON object
	ReasonDuplicateKey  Reason = "duplicate_field"
	ReasonMissingField  Reason = "missing_field"
	ReasonWrongType     Reason = "wrong_type"
	ReasonBadNumber     Reason = "bad_number" // out of range, NaN, Infinity
	ReasonBadSymbol     Reason = "bad_symbol"
	ReasonBadTS         Reason = "bad_ts"
	ReasonFutureTS      Reason = "future_ts"
	ReasonAncientTS     Reason = "ancient_ts"
	ReasonBadSeq        Reason = "bad_seq"
	ReasonBadPrice      Reason = "bad_price"
	ReasonBadSize       Reason = "bad_size"
	ReasonBadQuote      Reason = "bad_quote" // bid or ask not positive, or one without the other
	ReasonCrossedQuote  Reason = "bid_above_ask"
	ReasonKeyMismatch   Reason = "key_mismatch" // record key is not the symbol
	ReasonLate          Reason = "late"         // behind the watermark by more than the allowed lateness
	ReasonSeqJump       Reason = "seq_jump"     // seq implausibly far ahead of the symbol's newest
	ReasonDatabase      Reason = "db_rejected"  // PostgreSQL refused the row
)

// Rejection is the error returned for a record that is not a valid tick.
type Rejection struct {
	Reason Reason
	Detail string // one sentence for a person, e.g. "bid 10.5 is above ask 10.4"
}

func (r *Rejection) Error() string {
	if r.Detail == "" {
		return string(r.Reason)
	}
	return string(r.Reason) + ": " + r.Detail
}

func reject(reason Reason, detail string) *Rejection {
	return &Rejection{Reason: reason, Detail: detail}
}
