package shop

import (
	"fmt"
	"testing"
)

// TestNoticesOverflow: a subscription that falls noticeBuffer notices
// behind is ended, keeping what it was sent; the others go on.
func TestNoticesOverflow(t *testing.T) {
	var n notices
	slow, cancelSlow := n.subscribe()
	defer cancelSlow()
	fast, cancelFast := n.subscribe()
	defer cancelFast()
	for i := range noticeBuffer + 1 {
		n.publish(Notice{OrderID: fmt.Sprint(i)})
		if i < noticeBuffer {
			<-fast.ch
		}
	}
	select {
	case <-slow.ended:
	default:
		t.Fatal("a subscription behind by more than its buffer was not ended")
	}
	if slow.reason != endOverflow {
		t.Errorf("ended for %q, want %q", slow.reason, endOverflow)
	}
	if len(slow.ch) != noticeBuffer {
		t.Fatalf("the ended subscription kept %d notices, want %d", len(slow.ch), noticeBuffer)
	}
	select {
	case <-fast.ended:
		t.Fatal("a subscription that kept up was ended")
	case nt := <-fast.ch:
		if nt.OrderID != fmt.Sprint(noticeBuffer) {
			t.Fatalf("the last notice %+v", nt)
		}
	}
	n.close()
	<-fast.ended
	if fast.reason != endClosing {
		t.Errorf("closed for %q, want %q", fast.reason, endClosing)
	}
	late, cancelLate := n.subscribe()
	defer cancelLate()
	<-late.ended // refused after close
}
