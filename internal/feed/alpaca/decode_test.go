package alpaca_test

import (
	"testing"
	"time"

	"github.com/stockpipe/stockpipe/internal/feed"
	"github.com/stockpipe/stockpipe/internal/feed/alpaca"
)

func TestDecode(t *testing.T) {
	trade := `{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,"t":"2021-02-22T15:51:44.208Z","c":["@","I"],"z":"C"}`
	quote := `{"T":"q","S":"AMD","bx":"U","bp":87.66,"bs":1,"ax":"Q","ap":87.68,"as":4,"t":"2021-02-22T15:51:45.335689322Z","c":["R"],"z":"C"}`
	wantT := feed.Event{Trade: &feed.Trade{Symbol: "AAPL", TS: time.Date(2021, 2, 22, 15, 51, 44, 208_000_000, time.UTC),
		Price: 126.55, Size: 1, ID: "D:96921"}}
	wantQ := feed.Event{Quote: &feed.Quote{Symbol: "AMD", TS: time.Date(2021, 2, 22, 15, 51, 45, 335689322, time.UTC),
		Bid: 87.66, Ask: 87.68}}
	for _, tc := range []struct {
		name    string
		msg     string
		want    []feed.Event
		wantErr bool
	}{
		{name: "trade", msg: "[" + trade + "]", want: []feed.Event{wantT}},
		{name: "quote", msg: "[" + quote + "]", want: []feed.Event{wantQ}},
		{name: "mixed, in order", msg: "[" + quote + "," + trade + "," + quote + "]", want: []feed.Event{wantQ, wantT, wantQ}},
		{name: "offset time in UTC", msg: `[{"T":"t","S":"AAPL","i":96921,"x":"D","p":126.55,"s":1,"t":"2021-02-22T10:51:44.208-05:00","c":[],"z":"C"}]`,
			want: []feed.Event{wantT}},
		{name: "connected", msg: `[{"T":"success","msg":"connected"}]`, want: []feed.Event{}},
		{name: "authenticated", msg: `[{"T":"success","msg":"authenticated"}]`, want: []feed.Event{}},
		{name: "subscription", msg: `[{"T":"subscription","trades":["AAPL"],"quotes":["AMD"],"bars":[]}]`, want: []feed.Event{}},
		{name: "error", msg: `[{"T":"error","code":406,"msg":"connection limit exceeded"}]`, want: []feed.Event{}},
		{name: "a bar among trades", msg: `[{"T":"b","S":"AAPL","o":1,"h":2,"l":1,"c":2,"v":10,"t":"2021-02-22T15:51:00Z"},` + trade + "]",
			want: []feed.Event{wantT}},
		{name: "empty array", msg: `[]`, want: []feed.Event{}},
		{name: "not JSON", msg: `[{"T":"t"`, wantErr: true},
		{name: "an object, not an array", msg: trade, wantErr: true},
		{name: "an element not an object", msg: `[1]`, wantErr: true},
		{name: "no T", msg: `[{"S":"AAPL"}]`, wantErr: true},
		{name: "trade without a price", msg: `[{"T":"t","S":"AAPL","i":1,"x":"D","s":1,"t":"2021-02-22T15:51:44Z"}]`, wantErr: true},
		{name: "trade without an id", msg: `[{"T":"t","S":"AAPL","x":"D","p":1,"s":1,"t":"2021-02-22T15:51:44Z"}]`, wantErr: true},
		{name: "trade with a bad time", msg: `[{"T":"t","S":"AAPL","i":1,"x":"D","p":1,"s":1,"t":"yesterday"}]`, wantErr: true},
		{name: "trade with a fractional size", msg: `[{"T":"t","S":"AAPL","i":1,"x":"D","p":1,"s":0.5,"t":"2021-02-22T15:51:44Z"}]`, wantErr: true},
		{name: "quote without an ask", msg: `[{"T":"q","S":"AMD","bp":1,"t":"2021-02-22T15:51:44Z"}]`, wantErr: true},
		{name: "a bad element spoils the message", msg: "[" + trade + `,{"T":"q"}]`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := alpaca.Decode([]byte(tc.msg))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Decode = %v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			sameEvents(t, got, tc.want)
		})
	}
}
