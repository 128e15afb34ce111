package broker

import "sort"

// entry is one message in one queue: the shared, immutable *Message plus
// the state that belongs to this queue alone.
type entry struct {
	msg *Message
	// seq orders the queue; a requeued message goes back to its place.
	seq uint64
	// deadline is when the message expires, in Unix nanoseconds; 0 never.
	deadline int64
	// deliveries counts how often the message was delivered from this
	// queue; redelivered = deliveries > 0.
	deliveries uint32
}

// storage holds a queue's ready messages in seq order. It is the seam where
// the durable store plugs in: the queue never touches its messages except
// through it. Implementations need no locking: the queue's mutex guards
// every call.
type storage interface {
	// Len is the number of messages.
	Len() int
	// Bytes is the sum of the messages' body sizes.
	Bytes() int64
	// Push appends e; e.seq is greater than every seq held.
	Push(e entry)
	// Insert puts back a requeued e at its place by seq.
	Insert(e entry)
	// Peek returns the head without removing it.
	Peek() (entry, bool)
	// Pop removes and returns the head.
	Pop() (entry, bool)
}

// ring is the in-memory storage: a growable circular buffer of entries.
// Requeued entries go back near the head, so Insert shifts toward the head
// and costs little in practice.
type ring struct {
	buf   []entry
	head  int
	n     int
	bytes int64
}

var _ storage = (*ring)(nil)

func (r *ring) Len() int     { return r.n }
func (r *ring) Bytes() int64 { return r.bytes }

func (r *ring) at(i int) *entry { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *ring) grow() {
	size := 2 * len(r.buf)
	if size == 0 {
		size = 16
	}
	buf := make([]entry, size)
	for i := range r.n {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}

// shrink returns memory after a large backlog drains. It waits until the
// ring is a sixteenth full and leaves it a quarter full, so that a backlog
// that comes and goes does not regrow it each time.
func (r *ring) shrink() {
	if len(r.buf) <= 1024 || r.n > len(r.buf)/16 {
		return
	}
	buf := make([]entry, len(r.buf)/4)
	for i := range r.n {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}

func (r *ring) Push(e entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	*r.at(r.n) = e
	r.n++
	r.bytes += e.msg.size()
}

func (r *ring) Insert(e entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	// pos is the index of the first entry with a larger seq.
	pos := sort.Search(r.n, func(i int) bool { return r.at(i).seq > e.seq })
	// Make room at the head and shift the first pos entries one step back.
	r.head = (r.head - 1 + len(r.buf)) & (len(r.buf) - 1)
	for i := range pos {
		*r.at(i) = *r.at(i + 1)
	}
	*r.at(pos) = e
	r.n++
	r.bytes += e.msg.size()
}

func (r *ring) Peek() (entry, bool) {
	if r.n == 0 {
		return entry{}, false
	}
	return *r.at(0), true
}

func (r *ring) Pop() (entry, bool) {
	if r.n == 0 {
		return entry{}, false
	}
	p := r.at(0)
	e := *p
	*p = entry{}
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	r.bytes -= e.msg.size()
	r.shrink()
	return e, true
}
