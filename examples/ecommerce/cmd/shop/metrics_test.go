package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/examples/ecommerce/load"
	"github.com/troupehq/troupe/internal/testutil"
)

// TestMetricsEndpoint runs the shop, places a few orders (a fifth of the
// first charges time out, so some are retried) and scrapes /metrics on the
// order API's address.
func TestMetricsEndpoint(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		// A bus of this run's own: the bundled broker is one per name in
		// the process, and a run of -count=N must not share queues.
		bus := fmt.Sprintf("mem://shop-metrics-test-%d", time.Now().UnixNano())
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-data", dir, "-bus", bus, "-quiet",
			"-transient-failures", "0.2", "-seed", fmt.Sprint(seedThatTimesOutFirst(0.2)), "-stock", "apple=1000,pear=1000,plum=1"}, &testutil.SyncBuffer{}, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	// 20% of first charges time out: with 40 orders some are retried
	// (all but surely: 0.8^40), and none needs the default policy's 60 s
	// redelivery (nine timeouts in a row).
	res, err := load.Run(ctx, load.Config{URL: "http://" + addr, Orders: 40, Concurrency: 5, SoldOutShare: 0.3, Seed: 2, Timeout: time.Minute})
	if err != nil || res.Completed() != 40 {
		t.Fatalf("orders: %v %v", res, err)
	}
	series := scrape(t, "http://"+addr+"/metrics")
	for _, name := range []string{
		`troupe_handler_duration_seconds_count{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_event="order.placed",troupe_handler="charge",troupe_outcome="handled",troupe_service="payment"}`,
		`troupe_handler_retries_total{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_event="order.placed",troupe_handler="charge",troupe_retry_tier="immediate",troupe_service="payment"}`,
		`troupe_events_handled_total{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_event="notification.sent",troupe_handler="on-notified",troupe_outcome="handled",troupe_service="order"}`,
		`troupe_events_published_total{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_event="payment.refunded",troupe_publish_path="outbox",troupe_service="payment"}`,
		`troupe_outbox_lag_seconds_count{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_event="order.placed",troupe_publish_path="outbox",troupe_service="order"}`,
	} {
		if v, ok := series[name]; !ok || v <= 0 {
			t.Errorf("%s = %v (present %v), want > 0", name, v, ok)
		}
	}
	if _, ok := series[`troupe_outbox_pending{otel_scope_name="github.com/troupehq/troupe",otel_scope_schema_url="",otel_scope_version="",troupe_service="inventory"}`]; !ok {
		t.Error("no troupe_outbox_pending for the inventory")
	}
	if t.Failed() {
		for k, v := range series {
			if strings.HasPrefix(k, "troupe_") {
				t.Logf("%s %v", k, v)
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// scrape reads a Prometheus text page into series -> value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// seedThatTimesOutFirst returns a seed whose first draw by the payment
// service's generator (see NewPaymentService) is a timeout, so that the
// test exercises retries for certain, not by chance.
func seedThatTimesOutFirst(rate float64) uint64 {
	for seed := uint64(1); ; seed++ {
		if rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Float64() < rate {
			return seed
		}
	}
}
