package market

import (
	"time"
	_ "time/tzdata" // the exchange's zone on any machine, without a tz database
)

// ExchangeZone is the name of the zone US equity exchanges keep time in:
// sessions, trading days and daily bars follow its calendar.
const ExchangeZone = "America/New_York"

// NewYork is ExchangeZone, loaded once for every package that needs it.
var NewYork = func() *time.Location {
	loc, err := time.LoadLocation(ExchangeZone)
	if err != nil {
		panic(err) // embedded by time/tzdata: cannot happen
	}
	return loc
}()
