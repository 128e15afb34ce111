package amqp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestCoalescingConnKeepsEveryWriterInOrder(t *testing.T) {
	tests := []struct {
		name    string
		writers int
		writes  int
		size    int
	}{
		{"one writer, small frames", 1, 1000, 10},
		{"many writers, small frames", 8, 500, 37},
		{"many writers, frames over the pending limit", 3, 3, maxPending + 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := tcpPair(t)
			c := newCoalescingConn(client)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(server)
				got <- b
			}()
			var wg sync.WaitGroup
			for w := range tt.writers {
				wg.Go(func() {
					for i := range tt.writes {
						// Each write is a frame: writer, sequence, padding.
						frame := bytes.Repeat([]byte{'.'}, tt.size)
						copy(frame, fmt.Sprintf("%02d%06d", w, i))
						if _, err := c.Write(frame); err != nil {
							t.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			b := <-got
			if want := tt.writers * tt.writes * tt.size; len(b) != want {
				t.Fatalf("read %d bytes, want %d", len(b), want)
			}
			next := make([]int, tt.writers)
			for len(b) > 0 {
				var w, i int
				if _, err := fmt.Sscanf(string(b[:8]), "%02d%06d", &w, &i); err != nil {
					t.Fatalf("frame torn: %q", b[:8])
				}
				if i != next[w] {
					t.Fatalf("writer %d: frame %d after %d", w, i, next[w]-1)
				}
				next[w]++
				b = b[tt.size:]
			}
		})
	}
}

func TestCoalescingConnWriteErrorClosesAndSticks(t *testing.T) {
	client, server := tcpPair(t)
	c := newCoalescingConn(client)
	server.Close()
	// The peer is gone: some write fails (the first ones may still reach
	// the kernel buffer); from then on every Write returns the error, and
	// the socket is closed, so a reader sees it too.
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for err == nil {
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed peer never failed")
		}
		_, err = c.Write(make([]byte, 64<<10))
	}
	if _, again := c.Write([]byte("x")); !errors.Is(again, err) {
		t.Fatalf("second error %v, want %v", again, err)
	}
	if _, rerr := c.Read(make([]byte, 1)); rerr == nil {
		t.Fatal("read after a failed write succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("close after failure: %v", err)
	}
}

func TestCoalescingConnWriteAfterClose(t *testing.T) {
	client, _ := tcpPair(t)
	c := newCoalescingConn(client)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, errConnClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
}
