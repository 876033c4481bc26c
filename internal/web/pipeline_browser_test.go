package web_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stockpipe/stockpipe/internal/feed"
	fx "github.com/stockpipe/stockpipe/internal/fixture"
	"github.com/stockpipe/stockpipe/internal/kafka"
	"github.com/stockpipe/stockpipe/internal/web"
)

func TestBrowserPipelinePage(t *testing.T) {
	p := startPipeline(t)

	// Two records the processor must reject as malformed JSON.
	cl, err := kgo.NewClient(p.kcfg.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(context.Background(),
		&kgo.Record{Topic: kafka.TopicTicks, Key: []byte("AAPL"), Value: []byte(`{"symbol":"AAPL"`)},
		&kgo.Record{Topic: kafka.TopicTicks, Key: []byte("AAPL"), Value: []byte(`not json`)},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for p.committed() < 24_002 {
		if time.Now().After(deadline) {
			t.Fatalf("the processor did not commit the rejected records (committed %d)", p.committed())
		}
		time.Sleep(20 * time.Millisecond)
	}

	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(p.baseURL+"/pipeline")); err != nil {
		t.Fatal(err)
	}
	until(t, ctx, "the page loaded", `window.stockpipe && window.stockpipe.loaded === true`)
	if errText := eval[string](t, ctx, `document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent`); errText != "" {
		t.Errorf("the page shows an error: %s", errText)
	}

	if !eval[bool](t, ctx, `document.querySelector('#topics tr[data-topic="ticks"]') !== null`) {
		t.Error(`no row for topic "ticks"`)
	}
	// The dead letters and the lag are read when the server samples (every
	// two seconds), which may be before the processor's last commit.
	until(t, ctx, "the group's total lag", `(() => {
		const e = document.querySelector('#groups [data-group="stockpipe"] .lag-total');
		return e !== null && /^\d+$/.test(e.textContent.trim());
	})()`)
	lag := eval[string](t, ctx, `document.querySelector('#groups [data-group="stockpipe"] .lag-total').textContent.trim()`)
	n, err := strconv.ParseInt(lag, 10, 64)
	if err != nil || n < 0 {
		t.Errorf("total lag shows %q", lag)
	}
	if got := eval[float64](t, ctx, `window.stockpipe.lagTotal('stockpipe') ?? -1`); got < 0 {
		t.Errorf("window.stockpipe.lagTotal('stockpipe') = %v", got)
	}
	until(t, ctx, "two malformed_json dead letters", `(() => {
		const e = document.querySelector('#dlq tr[data-reason="malformed_json"] .count');
		return e !== null && e.textContent.trim() === '2';
	})()`)
	// The raw record is shown as text, escaped, not as markup.
	until(t, ctx, "the raw malformed record", `[...document.querySelectorAll('#dlq code')].some((c) => c.textContent.includes('{\\"symbol\\":\\"AAPL\\"'))`)
	if !eval[bool](t, ctx, `document.querySelector('#processor canvas') !== null`) {
		t.Error("no processor chart in #processor")
	}
	if !eval[bool](t, ctx, `document.querySelectorAll('#tables tbody tr[data-table]').length > 0`) {
		t.Error("no table sizes in #tables")
	}

	// The broker's directory is the server's data directory here.
	until(t, ctx, "the data directory's size", `!document.querySelector('#disk-size').hidden && document.querySelector('#disk-size-value').textContent !== '–'`)

	// Live: the stream's pipeline events keep the page current.
	until(t, ctx, "a live pipeline update", `window.stockpipe.updates > 0`)

	// 1280×720, then a phone-sized screen: wide tables scroll inside their
	// wrappers, but the consumer lag stays in view.
	shots(t, ctx, "pipeline")
	if w := eval[float64](t, ctx, `document.documentElement.scrollWidth`); w > 400 {
		t.Errorf("the pipeline page is %v px wide on a 390 px screen", w)
	}
	cut := eval[string](t, ctx, `(() => {
		const cells = [...document.querySelectorAll('#groups [data-group="stockpipe"] .offsets-table tr > .lag')];
		if (cells.length < 2) return 'no lag column';
		for (const c of cells) {
			const r = c.getBoundingClientRect();
			const box = c.closest('.table-scroll').getBoundingClientRect();
			if (r.width === 0 || r.left < box.left - 0.5 || r.right > Math.min(box.right, window.innerWidth) + 0.5) {
				return c.textContent + ' spans ' + r.left + '–' + r.right + ' px, its table shows ' + box.left + '–' + box.right;
			}
		}
		return '';
	})()`)
	if cut != "" {
		t.Errorf("the consumer lag is cut off at 390 px: %s", cut)
	}
	eval[bool](t, ctx, `(document.querySelector('#groups').scrollIntoView(), true)`)
	screenshot(t, ctx, "pipeline-groups-phone")
}

// TestBrowserFeedPanel: with a live feed in the process, /pipeline shows
// its connector — state, since when, messages/s, the last message's age,
// reconnects and errors — and follows it as it drops and comes back.
func TestBrowserFeedPanel(t *testing.T) {
	pool := fx.DB(t, 4)
	st := feed.NewStats("alpaca")
	connectedAt := time.Now()
	st.Connected(connectedAt)
	st.Messages(500, time.Now())
	srv, err := web.New(web.Config{Pool: pool, Logger: slog.New(slog.DiscardHandler), RestrictHosts: true,
		Feeds: func() []feed.Snapshot { return []feed.Snapshot{st.Snapshot()} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = srv.Run(ctx) }()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)

	bctx := browser(t)
	if err := chromedp.Do(bctx, chromedp.Navigate(hs.URL+"/pipeline")); err != nil {
		t.Fatal(err)
	}
	until(t, bctx, "the feed panel", `!document.querySelector('#feeds').hidden && document.querySelectorAll('#feed-rows tr').length === 1`)
	row := func() []string {
		return eval[[]string](t, bctx, `[...document.querySelectorAll('#feed-rows tr > *')].map((c) => c.textContent.trim())`)
	}
	if r := row(); r[0] != "alpaca" || r[1] != "connected" || r[2] == "–" || r[5] != "0" || r[6] != "0" || !strings.HasSuffix(r[4], "s ago") {
		t.Fatalf("feed row %q", r)
	}
	// The connection drops and comes back: the page follows.
	st.Disconnected(errors.New("EOF"))
	until(t, bctx, "the reconnecting state", `document.querySelector('#feed-rows .feed-state').textContent === 'reconnecting'`)
	if r := row(); r[2] != "–" || r[6] != "1" {
		t.Fatalf("while reconnecting: %q", r)
	}
	st.Connected(time.Now())
	until(t, bctx, "the reconnect counted", `document.querySelector('#feed-rows tr').children[5].textContent === '1' && document.querySelector('#feed-rows .feed-state').textContent === 'connected'`)
}
