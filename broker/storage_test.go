package broker

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// ringModel is the reference for ring: the entries in a slice, in seq
// order.
type ringModel struct {
	t    *testing.T
	r    ring
	want []entry
	// out are the entries popped and not yet put back, as a queue's
	// unacknowledged deliveries.
	out []entry
	// next is the seq of the next push; pushes may skip seqs.
	next uint64
}

// ringOp is one operation of the ring model test, decoded from two bytes.
func (m *ringModel) op(code, arg byte) {
	switch code % 6 {
	case 0, 1: // push, sometimes skipping seqs, with a deadline or a count
		m.next += uint64(arg>>6) + 1
		e := entry{msg: &Message{Body: make([]byte, arg%7)}, seq: m.next}
		if arg&0x08 != 0 {
			e.deadline = int64(arg) + 1
		}
		if arg&0x30 == 0x30 {
			e.deliveries = uint32(arg%3) + 1
		}
		m.r.Push(e)
		m.want = append(m.want, e)
	case 2, 3: // pop
		e, ok := m.r.Pop()
		if ok != (len(m.want) > 0) {
			m.t.Fatalf("Pop ok = %t with %d entries", ok, len(m.want))
		}
		if !ok {
			return
		}
		if e != m.want[0] {
			m.t.Fatalf("Pop = %+v, want %+v", e, m.want[0])
		}
		m.want = m.want[1:]
		m.out = append(m.out, e)
	case 4: // requeue an entry popped earlier, delivered once more
		if len(m.out) == 0 {
			return
		}
		i := int(arg) % len(m.out)
		e := m.out[i]
		m.out = slices.Delete(m.out, i, i+1)
		e.deliveries++
		m.insert(e)
	case 5: // insert a seq never pushed, anywhere up to the last push
		if m.next == 0 {
			return
		}
		seq := m.next - uint64(arg)%m.next
		for _, e := range slices.Concat(m.want, m.out) {
			if e.seq == seq {
				return
			}
		}
		m.insert(entry{msg: &Message{Body: make([]byte, arg%5)}, seq: seq, deadline: int64(arg & 0x10)})
	}
}

func (m *ringModel) insert(e entry) {
	m.r.Insert(e)
	i, _ := slices.BinarySearchFunc(m.want, e.seq, func(x entry, seq uint64) int {
		switch {
		case x.seq < seq:
			return -1
		case x.seq > seq:
			return 1
		}
		return 0
	})
	m.want = slices.Insert(m.want, i, e)
}

// check compares the ring with the model, entry by entry, and checks the
// ring's side tables.
func (m *ringModel) check() {
	m.t.Helper()
	r := &m.r
	var bytes int64
	for _, e := range m.want {
		bytes += e.msg.size()
	}
	if r.Len() != len(m.want) || r.Bytes() != bytes {
		m.t.Fatalf("Len, Bytes = %d, %d; want %d, %d", r.Len(), r.Bytes(), len(m.want), bytes)
	}
	for i, e := range m.want {
		if got := r.at(i); got != e {
			m.t.Fatalf("entry %d = %+v, want %+v", i, got, e)
		}
	}
	head, ok := r.Peek()
	if ok != (len(m.want) > 0) || (ok && head != m.want[0]) {
		m.t.Fatalf("Peek = %+v, %t; want the first of %d entries", head, ok, len(m.want))
	}
	counts := 0
	for i := range r.n {
		e := r.pushed(i)
		if e.deliveries != 0 {
			counts++
		}
		if i > 0 && e.seq <= r.seqAt(i-1) {
			m.t.Fatalf("pushed entry %d has seq %d after %d", i, e.seq, r.seqAt(i-1))
		}
	}
	if r.n > 0 && r.back.n > 0 && r.back.at(r.back.n-1).seq >= r.seqAt(0) {
		m.t.Fatalf("requeued seq %d not before pushed seq %d", r.back.at(r.back.n-1).seq, r.seqAt(0))
	}
	if counts != len(r.counts) {
		m.t.Fatalf("%d delivery counts held, the side table has %d", counts, len(r.counts))
	}
	// The blocks hold exactly the pushed entries: free slots keep no
	// message alive and no stale deadline, and no block is empty.
	held := 0
	for bi, b := range r.blocks {
		lo, hi := 0, len(b.msgs)
		if bi == 0 {
			lo = r.off
		}
		if bi == len(r.blocks)-1 {
			hi = r.tail
		}
		if hi <= lo && r.n > 0 {
			m.t.Fatalf("block %d of %d holds nothing (slots %d to %d)", bi, len(r.blocks), lo, hi)
		}
		for j := range b.msgs {
			free := j < lo || j >= hi
			if free && (b.msgs[j] != nil || (b.deadlines != nil && b.deadlines[j] != 0)) {
				m.t.Fatalf("free slot %d of block %d holds %v, deadline %v", j, bi, b.msgs[j], b.deadlines)
			}
			if !free {
				held++
			}
		}
	}
	if held != r.n {
		m.t.Fatalf("blocks hold %d entries, n is %d", held, r.n)
	}
}

func runRingModel(t *testing.T, data []byte) {
	m := &ringModel{t: t}
	for i := 0; i+1 < len(data); i += 2 {
		m.op(data[i], data[i+1])
		m.check()
	}
	for len(m.want) > 0 {
		m.op(2, 0)
	}
	m.check()
}

func FuzzRing(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 0, 4, 0})                            // push, push, pop, requeue
	f.Add([]byte{0, 0x48, 1, 0x89, 0, 0xc8, 2, 0, 2, 0, 4, 1, 4, 0}) // skipped seqs, deadlines
	f.Add([]byte{0, 0x30, 0, 0x31, 2, 0, 4, 0, 5, 1, 3, 0, 5, 3})    // counts, inserts among pushes
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			t.Skip()
		}
		runRingModel(t, data)
	})
}

// TestRingRandom runs the ring model on random operations, long enough to
// grow and shrink the buffers.
func TestRingRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	runs := 10
	if testing.Short() {
		runs = 2
	}
	for range runs {
		data := make([]byte, 2*3000)
		// Phases that fill the ring, then drain it with requeues.
		for i := 0; i < len(data); i += 2 {
			code := byte(rng.IntN(6))
			if i < len(data)/2 && code >= 2 && rng.IntN(3) > 0 {
				code = 0
			}
			data[i], data[i+1] = code, byte(rng.Uint32())
		}
		runRingModel(t, data)
	}
}

// TestRingBigBacklog fills the ring with deadlines on every other
// message, checks that the blocks waste at most one block, then drains it
// with requeues in the middle and checks that the blocks are freed.
func TestRingBigBacklog(t *testing.T) {
	m := &ringModel{t: t}
	const n = 5000
	for i := range n {
		m.op(0, byte(i&0x0f))
	}
	m.check()
	slots := 0
	for _, b := range m.r.blocks {
		slots += len(b.msgs)
	}
	if slots >= n+blockMax {
		t.Errorf("%d slots for %d messages", slots, n)
	}
	for i := range n - 10 {
		m.op(2, 0)
		if i%100 == 0 {
			m.op(4, byte(i))
		}
	}
	m.check()
	if len(m.r.blocks) > 2 {
		t.Errorf("%d blocks left for %d messages", len(m.r.blocks), m.r.n)
	}
	for len(m.want) > 0 {
		m.op(2, 0)
	}
	m.check()
}
