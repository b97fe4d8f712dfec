//go:build vm

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/agentclient"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/service"
)

var errInjectedVM = errors.New("injected failure")

// failingSnapshots wires a real Snapshotter whose pause fails at the step
// stored in failAt ("" = never).
func failingSnapshots(failAt *atomic.Value) func(*Options) {
	return func(o *Options) {
		d := o.Driver.(sandboxsnap.Driver)
		s, err := sandboxsnap.New(sandboxsnap.Options{
			Driver: d, DataDir: o.DataDir, Logger: o.Logger,
			FailAt: func(step string) error {
				if v, _ := failAt.Load().(string); v == step {
					return errInjectedVM
				}
				return nil
			},
		})
		if err != nil {
			panic(err)
		}
		o.Snapshots = s
	}
}

func vmExec(t *testing.T, c *agentclient.Client, id, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := c.Exec(ctx, id, service.ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}})
	if err != nil {
		t.Fatalf("exec %q: %v", script, err)
	}
	if res.ExitCode != 0 {
		t.Fatalf("exec %q: exit %d: %s %s", script, res.ExitCode, res.Stdout, res.Stderr)
	}
	return res.Stdout
}

// A pause that fails while writing memory (and one that fails right after
// the device state was staged) keeps the previous snapshot and leaves the
// same VM running; the next pause succeeds and resumes to the latest state.
func TestVMPauseFailureKeepsSnapshot(t *testing.T) {
	var failAt atomic.Value
	failAt.Store("")
	e := newVMEnvWith(t, failingSnapshots(&failAt), "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.client
	const id = "vmpf1"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 10240, AccessToken: "tok-" + id,
	}); err != nil {
		t.Fatal(err)
	}
	vmExec(t, c, id, "echo one > $HOME/one")
	if err := c.PauseSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	snapDir := filepath.Join(e.data, "sandboxes", id, "snapshot")
	first, err := sandboxsnap.Stat(snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
		t.Fatal(err)
	}
	vmExec(t, c, id, "echo two > $HOME/two")

	for _, step := range []string{"memory-read", "state"} {
		pid := vmmPID(t, e.data, id)
		failAt.Store(step)
		err := c.PauseSandbox(ctx, id)
		failAt.Store("")
		if err == nil {
			t.Fatalf("pause with failure at %q succeeded", step)
		}
		in, err := e.agent.Manager().Get(id)
		if err != nil || in.State != sbx.StateRunning {
			t.Fatalf("after failed pause at %q: %+v %v, want running", step, in, err)
		}
		if got := vmmPID(t, e.data, id); got != pid {
			t.Fatalf("VMM pid %d after failed pause, was %d: the VM was replaced", got, pid)
		}
		if out := vmExec(t, c, id, "cat $HOME/one $HOME/two"); out != "one\ntwo\n" {
			t.Fatalf("guest after failed pause: %q", out)
		}
		now, err := sandboxsnap.Stat(snapDir)
		if err != nil || now.Seq != first.Seq || !sandboxsnap.Committed(snapDir) {
			t.Fatalf("snapshot after failed pause at %q: %+v %v, want the previous one (seq %d) intact", step, now, err, first.Seq)
		}
	}
	// The guest keeps running after the failures: its clock and state move on.
	vmExec(t, c, id, "echo three > $HOME/three")
	if err := c.PauseSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-" + id}); err != nil {
		t.Fatal(err)
	}
	if out := vmExec(t, c, id, "cat $HOME/one $HOME/two $HOME/three"); out != "one\ntwo\nthree\n" {
		t.Fatalf("guest after pause/resume: %q", out)
	}
	if err := c.DestroySandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// Agent shutdown pauses running sandboxes (no VM left behind); the next
// agent resumes them at start-up, once, with their memory intact.
func TestVMShutdownRestartResume(t *testing.T) {
	e := newVMEnv(t, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const id = "vmsr1"
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 10240, AccessToken: "tok-" + id,
	}); err != nil {
		t.Fatal(err)
	}
	// A background shell holding state in memory only: its pid and a
	// variable, observable through a file it rewrites every 100 ms.
	vmExec(t, e.client, id, `V=marker-$$; (while :; do echo "$V $$ $(cat /proc/uptime)" > /tmp/alive; sleep 0.1; done) >/dev/null 2>&1 & echo $! > /tmp/loop.pid`)
	time.Sleep(300 * time.Millisecond)
	before := vmExec(t, e.client, id, "cat /tmp/loop.pid; head -c 40 /tmp/alive")
	pid := vmmPID(t, e.data, id)

	e.restart(t)
	if b, err := readProcCmdline(pid); err == nil && strings.Contains(b, e.data) {
		t.Fatalf("VMM %d still runs after shutdown (want paused)", pid)
	}
	list, err := e.client.ListSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].SandboxID != id || list[0].State != string(sbx.StateRunning) {
		t.Fatalf("after restart: %+v, want %s resumed (running)", list, id)
	}
	after := vmExec(t, e.client, id, "cat /tmp/loop.pid; head -c 40 /tmp/alive")
	// Same loop pid and the same in-memory variable: the process survived.
	bl, al := strings.SplitN(before, "\n", 2), strings.SplitN(after, "\n", 2)
	if bl[0] != al[0] || strings.Fields(bl[1])[0] != strings.Fields(al[1])[0] {
		t.Fatalf("state after restart+resume: %q, before: %q", after, before)
	}
	// And it keeps running.
	one := vmExec(t, e.client, id, "cat /tmp/alive")
	time.Sleep(500 * time.Millisecond)
	if two := vmExec(t, e.client, id, "cat /tmp/alive"); two == one {
		t.Fatalf("background loop stopped after resume: %q", two)
	}
	if err := e.client.DestroySandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func readProcCmdline(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return string(b), err
}
