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

// RegularSession reports whether t falls in the US exchanges' regular
// session, 09:30 to 16:00 New York time on a weekday. Holidays are not
// known: a holiday looks like a session without trades.
func RegularSession(t time.Time) bool {
	ny := t.In(NewYork)
	if wd := ny.Weekday(); wd == time.Saturday || wd == time.Sunday {
		return false
	}
	m := ny.Hour()*60 + ny.Minute()
	return m >= 9*60+30 && m < 16*60
}
