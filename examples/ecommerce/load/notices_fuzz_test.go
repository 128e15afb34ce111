package load

import (
	"bytes"
	"testing"

	"github.com/troupehq/troupe/examples/ecommerce/shop"
)

// FuzzNoticesRead: the stream of notices comes from the network. Reading
// it never panics, always ends with the reason it stopped (the stream
// carries no "it is over" that would be a nil error), and hands on only
// notices that name an order.
func FuzzNoticesRead(f *testing.F) {
	f.Add([]byte("event: notified\ndata: {\"order_id\":\"o-1\",\"status\":\"CONFIRMED\",\"notified_at\":\"2026-12-02T01:00:00Z\"}\n\n: ping\n\n"))
	f.Add([]byte("event: end\ndata: {\"reason\":\"overflow\"}\n\n"))
	f.Add([]byte("event: notified\ndata: {\"order_id\":\"\"}\n\n"))
	f.Add([]byte("event: notified\ndata: {\"order_id\":\ndata: \"o-2\"}\n\nevent: notified\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		n := &notices{waiting: map[string]chan shop.Notice{}, early: map[string]shop.Notice{}}
		if err := n.read(bytes.NewReader(stream)); err == nil {
			t.Fatal("read returned no reason for stopping")
		}
		for id, nt := range n.early {
			if id == "" || nt.OrderID != id {
				t.Fatalf("kept notice %+v under %q", nt, id)
			}
		}
	})
}
