// Command benchmem measures the heap that queued messages hold in the
// broker, outside the test harness: it publishes -n messages of -size bytes
// to one durable queue with no consumer and prints the growth of the live
// heap (HeapAlloc) and of the heap spans in use (HeapInuse), measured after
// a GC before and after.
//
//	go run ./broker/internal/benchmem [-n 1000000] [-size 256]
package main

import (
	"flag"
	"fmt"
	"log"
	"runtime"
	"time"

	"github.com/troupehq/troupe/broker"
)

func main() {
	n := flag.Int("n", 1_000_000, "messages to queue")
	size := flag.Int("size", 256, "body size in bytes")
	flag.Parse()

	br := broker.New()
	defer br.Close()
	conn, err := br.Connect(broker.DefaultVHost)
	if err != nil {
		log.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		log.Fatal(err)
	}
	const queue = "benchmem"
	if _, err := ch.QueueDeclare(queue, broker.QueueOptions{Durable: true}); err != nil {
		log.Fatal(err)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	for range *n {
		body := make([]byte, *size) // a fresh body, as a wire server would read it
		if _, err := ch.Publish("", queue, broker.Publishing{Body: body}, broker.PublishOptions{}); err != nil {
			log.Fatal(err)
		}
	}
	elapsed := time.Since(t0)
	runtime.GC()
	runtime.ReadMemStats(&after)
	info, err := ch.QueueDeclare(queue, broker.QueueOptions{Durable: true, Passive: true})
	if err != nil {
		log.Fatal(err)
	}
	runtime.KeepAlive(ch)
	if info.Messages != *n {
		log.Fatalf("queue holds %d messages, want %d", info.Messages, *n)
	}

	alloc := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	inuse := int64(after.HeapInuse) - int64(before.HeapInuse)
	const mib = 1 << 20
	fmt.Printf("%s, GOMAXPROCS=%d: %d messages of %d B queued in %v (%.0f msgs/s)\n",
		runtime.Version(), runtime.GOMAXPROCS(0), *n, *size, elapsed.Round(time.Millisecond), float64(*n)/elapsed.Seconds())
	fmt.Printf("HeapAlloc  +%8.1f MiB  %7.1f B/msg  (%.1f B/msg beyond the body)\n",
		float64(alloc)/mib, float64(alloc)/float64(*n), float64(alloc)/float64(*n)-float64(*size))
	fmt.Printf("HeapInuse  +%8.1f MiB  %7.1f B/msg\n", float64(inuse)/mib, float64(inuse)/float64(*n))
	fmt.Printf("Sys        +%8.1f MiB  (total %.1f MiB)\n", float64(int64(after.Sys)-int64(before.Sys))/mib, float64(after.Sys)/mib)
}
