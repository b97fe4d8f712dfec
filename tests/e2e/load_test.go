//go:build vm

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agent"
	"github.com/hearth-sandbox/hearth/internal/bench"
	"github.com/hearth-sandbox/hearth/internal/cli"
)

// TestConcurrentCreatesAndCycles runs the load of `hearth bench load`
// against the stack: 12 clients creating at once on this 2-core box (each
// sandbox runs a command and round-trips a file), then 30 full cycles
// (create, exec, files, pause, resume, exec, destroy) on 3 clients. Every
// operation must succeed, and the host inventory (VMM processes, network
// namespaces and links, loop devices, mounts, RAM files, run dirs) must be
// what it was before.
func TestConcurrentCreatesAndCycles(t *testing.T) {
	c := cli.NewClient(stack.URL, stack.Credentials.APIKey, "")
	for _, tc := range []struct {
		name string
		o    bench.LoadOptions
	}{
		{"12 concurrent creates", bench.LoadOptions{Clients: 12, MaxCycles: 12, NoPause: true}},
		{"30 cycles", bench.LoadOptions{Clients: 3, MaxCycles: 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Duration, o.OpTimeout, o.DataDir = 20*time.Minute, 5*time.Minute, stack.DataDir
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
			defer cancel()
			rep, err := bench.Load(ctx, c, o)
			for _, e := range rep.ErrorSamples {
				t.Log(e)
			}
			if err != nil {
				t.Fatalf("%v (leaked: %v)", err, rep.Leaked)
			}
			if rep.Cycles != o.MaxCycles || rep.Before == nil || rep.After == nil {
				t.Fatalf("ran %d cycles, want %d; inventories %v %v", rep.Cycles, o.MaxCycles, rep.Before, rep.After)
			}
			if rep.After.Total() > rep.Before.Total() {
				t.Fatalf("inventory grew: before %+v after %+v", *rep.Before, *rep.After)
			}
			for _, op := range rep.Ops {
				t.Logf("%-10s n=%-3d p50 %s p99 %s", op.Name, op.N, bench.FormatMS(op.P50), bench.FormatMS(op.P99))
			}
		})
	}
}

// The inventory sees a running sandbox (else the leak checks above prove
// nothing).
func TestInventorySeesASandbox(t *testing.T) {
	a := newAPI(t)
	before := agent.TakeInventory(stack.DataDir)
	sb := a.create(map[string]any{"template": "tiny"})
	in := agent.TakeInventory(stack.DataDir)
	if len(in.VMMs) != len(before.VMMs)+1 || len(in.Namespaces) != len(before.Namespaces)+1 || len(in.RunDirs) != len(before.RunDirs)+1 || len(in.RAMFiles) != len(before.RAMFiles)+1 {
		t.Fatalf("inventory with sandbox %s: %+v (before %+v)", sb.ID, in, before)
	}
}
