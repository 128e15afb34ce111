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

// ring is the in-memory storage. A queued message that cannot expire and
// was never delivered from the queue costs one pointer; what only some
// messages need is kept beside the pointers:
//
//   - seqs are implied by position: runs records where the pushed seqs
//     stop being consecutive (a queue skips none, so there is one run);
//   - a block's deadlines are allocated when the first message with a
//     deadline lands in it;
//   - counts holds the delivery counts of pushed entries that have one (a
//     queue pushes none);
//   - back holds the requeued entries whole. A requeued message was
//     delivered before every message pushed after it, so back comes before
//     the pushed ones; Insert keeps that true for any seq by moving pushed
//     entries into back first.
//
// The pointers sit in a list of blocks that double from blockMin to
// blockMax slots: a short queue stays small, a long one wastes at most a
// block, growing never copies, and a draining queue frees its blocks one
// by one.
type ring struct {
	back entryRing

	// blocks hold the pushed entries, the first at blocks[0].msgs[off],
	// the last at blocks[len(blocks)-1].msgs[tail-1]; n counts them.
	blocks    []*block
	off, tail int
	n         int
	// spare is a drained block kept for the next one needed.
	spare *block
	// pos is the position of the first pushed entry, counting every entry
	// ever pushed: positions key runs and counts.
	pos    uint64
	runs   []seqRun
	counts map[uint64]uint32

	bytes int64
}

// Sizes of a ring's blocks, in messages. A block has 2^k-1 slots, so that
// with the 8-byte header the Go runtime adds to objects over 512 bytes that
// hold pointers it fills its size class (120 bytes to 8 KiB) exactly.
const (
	blockMin = 15
	blockMax = 1023
)

// block is a slice of a ring's pushed entries.
type block struct {
	msgs []*Message
	// deadlines is nil until an entry with a deadline is pushed into the
	// block, then as long as msgs.
	deadlines []int64
}

// seqRun says that the pushed entry at position pos has seq seq, and the
// following ones seq+1, seq+2, ..., up to the next run.
type seqRun struct{ pos, seq uint64 }

var _ storage = (*ring)(nil)

func (r *ring) Len() int     { return r.back.n + r.n }
func (r *ring) Bytes() int64 { return r.bytes }

// seqAt is the seq of the i-th pushed entry.
func (r *ring) seqAt(i int) uint64 {
	p := r.pos + uint64(i)
	if len(r.runs) == 1 {
		return r.runs[0].seq + (p - r.runs[0].pos)
	}
	j := sort.Search(len(r.runs), func(j int) bool { return r.runs[j].pos > p }) - 1
	return r.runs[j].seq + (p - r.runs[j].pos)
}

// locate returns the block and slot of the i-th pushed entry; i < r.n.
func (r *ring) locate(i int) (*block, int) {
	j := r.off + i
	last := len(r.blocks) - 1
	for _, b := range r.blocks[:last] {
		if j < len(b.msgs) {
			return b, j
		}
		j -= len(b.msgs)
	}
	return r.blocks[last], j
}

// pushed returns the i-th pushed entry; i < r.n.
func (r *ring) pushed(i int) entry {
	b, j := r.locate(i)
	e := entry{msg: b.msgs[j], seq: r.seqAt(i)}
	if b.deadlines != nil {
		e.deadline = b.deadlines[j]
	}
	if r.counts != nil {
		e.deliveries = r.counts[r.pos+uint64(i)]
	}
	return e
}

// at returns the i-th entry in seq order.
func (r *ring) at(i int) entry {
	if i < r.back.n {
		return *r.back.at(i)
	}
	return r.pushed(i - r.back.n)
}

// newBlock returns an empty block of at least size slots.
func (r *ring) newBlock(size int) *block {
	if b := r.spare; b != nil && len(b.msgs) >= size {
		r.spare = nil
		return b
	}
	return &block{msgs: make([]*Message, size)}
}

func (r *ring) Push(e entry) {
	if len(r.blocks) == 0 {
		r.blocks = append(r.blocks, r.newBlock(blockMin))
	} else if last := r.blocks[len(r.blocks)-1]; r.tail == len(last.msgs) {
		r.blocks = append(r.blocks, r.newBlock(min(2*len(last.msgs)+1, blockMax)))
		r.tail = 0
	}
	p := r.pos + uint64(r.n)
	if r.n == 0 {
		r.runs = append(r.runs[:0], seqRun{pos: p, seq: e.seq})
	} else if last := r.runs[len(r.runs)-1]; e.seq != last.seq+(p-last.pos) {
		r.runs = append(r.runs, seqRun{pos: p, seq: e.seq})
	}
	b := r.blocks[len(r.blocks)-1]
	b.msgs[r.tail] = e.msg
	if e.deadline != 0 {
		if b.deadlines == nil {
			b.deadlines = make([]int64, len(b.msgs))
		}
		b.deadlines[r.tail] = e.deadline
	}
	if e.deliveries != 0 {
		if r.counts == nil {
			r.counts = make(map[uint64]uint32)
		}
		r.counts[p] = e.deliveries
	}
	r.tail++
	r.n++
	r.bytes += e.msg.size()
}

func (r *ring) Insert(e entry) {
	// Pushed entries that belong before e go to back first, so that back
	// keeps coming before every pushed entry.
	for r.n > 0 && r.seqAt(0) < e.seq {
		r.back.push(r.popPushed())
	}
	r.back.insert(e)
	r.bytes += e.msg.size()
}

func (r *ring) Peek() (entry, bool) {
	switch {
	case r.back.n > 0:
		return *r.back.at(0), true
	case r.n > 0:
		return r.pushed(0), true
	}
	return entry{}, false
}

func (r *ring) Pop() (entry, bool) {
	var e entry
	switch {
	case r.back.n > 0:
		e = r.back.pop()
	case r.n > 0:
		e = r.popPushed()
	default:
		return entry{}, false
	}
	r.bytes -= e.msg.size()
	return e, true
}

// popPushed removes and returns the first pushed entry; r.n > 0. It leaves
// r.bytes to the caller.
func (r *ring) popPushed() entry {
	e := r.pushed(0)
	b := r.blocks[0]
	b.msgs[r.off] = nil
	if b.deadlines != nil {
		b.deadlines[r.off] = 0
	}
	if e.deliveries != 0 {
		delete(r.counts, r.pos)
		if len(r.counts) == 0 {
			r.counts = nil
		}
	}
	r.off++
	r.n--
	r.pos++
	if len(r.runs) > 1 && r.runs[1].pos == r.pos {
		r.runs = r.runs[1:]
	}
	switch {
	case r.n == 0:
		// The head block is the only one: start it over.
		r.off, r.tail = 0, 0
		r.runs = r.runs[:0]
	case r.off == len(b.msgs):
		r.blocks[0] = nil
		r.blocks = r.blocks[1:]
		r.off = 0
		if r.spare == nil || len(b.msgs) > len(r.spare.msgs) {
			r.spare = b
		}
	}
	return e
}

// entryRing is a growable circular buffer of whole entries in seq order:
// the requeued entries of a ring. Requeued entries go back near the head,
// so insert shifts toward the head and costs little in practice.
type entryRing struct {
	buf  []entry
	head int
	n    int
}

func (r *entryRing) at(i int) *entry { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

func (r *entryRing) resize(size int) {
	buf := make([]entry, size)
	for i := range r.n {
		buf[i] = *r.at(i)
	}
	r.buf, r.head = buf, 0
}

// push appends e, whose seq is greater than every seq held.
func (r *entryRing) push(e entry) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), 16))
	}
	*r.at(r.n) = e
	r.n++
}

// insert puts e at its place by seq.
func (r *entryRing) insert(e entry) {
	if r.n == len(r.buf) {
		r.resize(max(2*len(r.buf), 16))
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
}

// pop removes and returns the head; r.n > 0.
func (r *entryRing) pop() entry {
	p := r.at(0)
	e := *p
	*p = entry{}
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	if len(r.buf) > 1024 && r.n <= len(r.buf)/16 {
		r.resize(len(r.buf) / 4)
	}
	return e
}
