//go:build integration

package twopc_test

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/testutil"
	"github.com/troupehq/troupe/outbox"
	"github.com/troupehq/troupe/saga/twopc"
)

// proc is a running twopccrash node.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func startNode(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default: // the test reads only the lines it waits for
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// waitLine waits for a line starting with prefix.
func (p *proc) waitLine(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-p.done:
			t.Fatalf("node exited before printing %q", prefix)
		case <-timeout:
			t.Fatalf("no %q line within 30s", prefix)
		}
	}
}

// TestKilledProcesses runs a coordinator and two participants as separate
// processes on RabbitMQ, stops one of them at a protocol step, kills it
// there with SIGKILL, restarts it, and checks that every transaction ends
// with the same outcome everywhere and nothing held.
func TestKilledProcesses(t *testing.T) {
	busURL := testutil.AMQPURL(t)
	bin := filepath.Join(t.TempDir(), "twopccrash")
	if out, err := exec.Command("go", "build", "-o", bin, "../../internal/cmd/twopccrash").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	tests := []struct {
		name    string
		node    string // "coord", "payment" or "inventory"
		pauseAt string
	}{
		{"coordinator killed before logging the decision", "coord", "deciding"},
		{"coordinator killed after logging the decision", "coord", "decided"},
		{"participant killed before voting", "payment", "voting"},
		{"participant killed after voting", "inventory", "voted"},
		{"participant killed after the decision", "payment", "applied"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runKilled(t, bin, busURL, fmt.Sprintf("k%d-%d", i, time.Now().UnixNano()), tt.node, tt.pauseAt)
		})
	}
}

func runKilled(t *testing.T, bin, busURL, run, victim, pauseAt string) {
	const n = 20
	dir := t.TempDir()
	exchange := "twopc." + run
	names := map[string]string{"coord": "coord-" + run, "payment": "payment-" + run, "inventory": "inventory-" + run}
	dbs := map[string]string{}
	for k := range names {
		dbs[k] = "sqlite:" + filepath.Join(dir, k+".db")
	}
	args := func(node string, pause bool) []string {
		a := []string{"participant", "-name", names[node], "-db", dbs[node], "-bus", busURL, "-exchange", exchange}
		if node == "coord" {
			a[0] = "coordinator"
			a = append(a, "-participants", names["payment"]+","+names["inventory"], "-n", fmt.Sprint(n))
		}
		if pause {
			a = append(a, "-pause-at", pauseAt)
		}
		return a
	}
	procs := map[string]*proc{}
	for _, node := range []string{"payment", "inventory"} {
		procs[node] = startNode(t, bin, args(node, node == victim)...)
		procs[node].waitLine(t, "SERVING")
	}
	procs["coord"] = startNode(t, bin, args("coord", victim == "coord")...)
	line := procs[victim].waitLine(t, "PAUSED")
	t.Logf("%s: %s; kill -9", victim, line)
	procs[victim].kill()
	procs[victim] = startNode(t, bin, args(victim, false)...)
	procs["coord"].waitLine(t, "ALL BEGUN")

	ctx := context.Background()
	open := func(node string) *outbox.DB {
		db, err := outbox.Open(ctx, dbs[node])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	coordDB, payDB, invDB := open("coord"), open("payment"), open("inventory")
	testutil.Eventually(t, 60*time.Second, func() error {
		all, err := twopc.List(ctx, coordDB, twopc.ListFilter{Limit: 1000})
		if err != nil {
			return err
		}
		unfinished := 0
		for _, s := range all {
			if s.Finished.IsZero() {
				unfinished++
			}
		}
		if len(all) != n || unfinished > 0 {
			return fmt.Errorf("%d transactions logged, %d unfinished", len(all), unfinished)
		}
		return nil
	})
	all, err := twopc.List(ctx, coordDB, twopc.ListFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[twopc.Outcome]int{}
	for _, s := range all {
		outcomes[s.Outcome]++
		want := map[twopc.Outcome]string{twopc.Commit: "committed", twopc.Abort: "aborted"}[s.Outcome]
		for node, db := range map[string]*outbox.DB{"payment": payDB, "inventory": invDB} {
			var state string
			if err := db.SQL().QueryRow(`SELECT state FROM troupe_twopc_participant WHERE participant = ? AND gid = ?`, names[node], s.GID).Scan(&state); err != nil {
				t.Fatalf("%s at %s: %v", s.GID, node, err)
			}
			var held, committed int
			if err := db.SQL().QueryRow(`SELECT COUNT(*), COALESCE(SUM(state = 'committed'), 0) FROM test_holds WHERE gid = ?`, s.GID).Scan(&held, &committed); err != nil {
				t.Fatal(err)
			}
			wantRows := map[bool]int{true: 1, false: 0}[s.Outcome == twopc.Commit]
			if state != want || held != wantRows || committed != wantRows {
				t.Fatalf("%s: coordinator %s, %s is %q with %d resource rows (%d committed)", s.GID, s.Outcome, node, state, held, committed)
			}
		}
	}
	t.Logf("%d committed, %d aborted", outcomes[twopc.Commit], outcomes[twopc.Abort])
	if outcomes[twopc.Commit] == 0 || outcomes[twopc.Abort] == 0 {
		t.Fatalf("want both outcomes, got %v", outcomes)
	}
}
