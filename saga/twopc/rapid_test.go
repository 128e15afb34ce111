package twopc_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/troupehq/troupe/saga/twopc"
)

var crashPoints = []fault{
	{coordName, twopc.StepBegun}, {coordName, twopc.StepDeciding}, {coordName, twopc.StepDecided},
	{"payment", twopc.StepPreparing}, {"payment", twopc.StepVoting}, {"payment", twopc.StepVoted}, {"payment", twopc.StepApplied},
	{"inventory", twopc.StepPreparing}, {"inventory", twopc.StepVoting}, {"inventory", twopc.StepVoted}, {"inventory", twopc.StepApplied},
}

// TestRandomInterleavings runs up to three concurrent transactions through
// random interleavings of deliveries, losses, duplicates, reorderings,
// clock jumps, crashes between messages and crashes at protocol steps,
// checking after every step that no participant committed what another
// aborted; then lets the network heal and checks that every participant
// ended in the coordinator's outcome with nothing held.
func TestRandomInterleavings(t *testing.T) {
	dir := t.TempDir()
	var runs atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		path := "sqlite:" + filepath.Join(dir, fmt.Sprintf("run-%d.db", runs.Add(1)))
		faults := rapid.SliceOfNDistinct(rapid.SampledFrom(crashPoints), 0, 4, func(f fault) fault { return f }).Draw(rt, "crash points")
		w := newWorld(rt, path, faults...)
		nodes := append([]string{coordName}, partNames...)
		steps := rapid.IntRange(5, 60).Draw(rt, "steps")
		for range steps {
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); {
			case op == 0 && len(w.gids) < 3:
				gid := fmt.Sprintf("tx-%d", len(w.gids)+1)
				give := []item{
					{Amount: 1, Decline: rapid.Float64Range(0, 1).Draw(rt, "payment declines") < 0.2},
					{Amount: 1, Decline: rapid.Float64Range(0, 1).Draw(rt, "inventory declines") < 0.2},
				}
				w.begin(gid, give...)
			case op <= 5 && len(w.inflight) > 0:
				w.deliver(rapid.IntRange(0, len(w.inflight)-1).Draw(rt, "deliver"))
			case op == 6 && len(w.inflight) > 0:
				i := rapid.IntRange(0, len(w.inflight)-1).Draw(rt, "drop")
				w.inflight = append(w.inflight[:i], w.inflight[i+1:]...)
			case op == 7 && len(w.inflight) > 0:
				i := rapid.IntRange(0, len(w.inflight)-1).Draw(rt, "duplicate")
				w.inflight = append(w.inflight, w.inflight[i])
			case op == 8:
				w.crash(rapid.SampledFrom(nodes).Draw(rt, "crash"))
			default:
				w.tick(time.Duration(rapid.IntRange(0, 2000).Draw(rt, "tick ms")) * time.Millisecond)
			}
			w.checkSafety()
		}
		w.settle()
		w.checkSettled()
	})
}
