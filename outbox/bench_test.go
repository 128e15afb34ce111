package outbox_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/troupehq/troupe/outbox"
)

// BenchmarkInTx is a handler's transaction on SQLite — the inbox claim,
// a row of the service's own, one event into the outbox — run by 1 to 32
// callers at once. With one caller every transaction commits alone; with
// more, those that queue meanwhile commit together (group commit), and
// the cost per transaction falls. The relay does not run: the outbox only
// grows, as it does between two passes.
//
//	go test -run='^$' -bench=InTx -benchtime=3000x ./outbox/
func BenchmarkInTx(b *testing.B) {
	for _, callers := range []int{1, 4, 16, 32} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			ctx := context.Background()
			db, err := outbox.Open(ctx, "sqlite:"+b.TempDir()+"/bench.db")
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if _, err := db.SQL().ExecContext(ctx, `CREATE TABLE orders (id TEXT PRIMARY KEY, status TEXT NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"order_id":"0123456789abcdef","amount":4200,"method":"card"}`)
			var n atomic.Int64
			b.SetParallelism(callers) // × GOMAXPROCS goroutines
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					id := fmt.Sprintf("order-%d", n.Add(1))
					err := db.InTx(ctx, func(tx *outbox.Tx) error {
						if ok, err := tx.Claim(ctx, "bench", "msg-"+id); err != nil || !ok {
							return fmt.Errorf("claim: %v %v", ok, err)
						}
						if _, err := tx.Exec(ctx, `INSERT INTO orders (id, status) VALUES (?, ?)`, id, "PAID"); err != nil {
							return err
						}
						return tx.Add(ctx, "payment.captured", id, message.NewMessage("evt-"+id, payload))
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
