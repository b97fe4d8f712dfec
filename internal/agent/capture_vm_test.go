//go:build vm

package agent

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/sandboxsnap"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/vmm"
)

// standstillRecorder is the real Snapshotter, keeping the standstill of the
// last capture (what the test compares with a pause).
type standstillRecorder struct {
	*sandboxsnap.Snapshotter
	last atomic.Int64 // ns
}

func (r *standstillRecorder) Capture(ctx context.Context, m vmm.Machine, cfg vmm.Config, dst string, frozen func(context.Context) error) (time.Duration, error) {
	d, err := r.Snapshotter.Capture(ctx, m, cfg, dst, frozen)
	r.last.Store(int64(d))
	return d, err
}

// envdStat calls envd's Connect Stat (a POST: Go's transport never retries
// it on another connection) for path through the agent's sandbox proxy,
// with client's kept-alive connections.
func envdStat(t *testing.T, client *http.Client, base, id, token, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/sandboxes/"+id+"/proxy/49983/filesystem.Filesystem/Stat",
		strings.NewReader(`{"path":"`+path+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("X-Access-Token", token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("envd Stat through the proxy: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// A snapshot of a running sandbox keeps it running in the same VMM process
// (no restore: its network, connections and envd stay), the template holds
// memory and disk of one instant, and the source stands still for less than
// a pause takes. Then a plain pause and resume (with another sandbox
// started in between, on the freed network slot): the request after it
// goes through the same kept-alive client and must not meet a connection
// into the namespace the resume replaced.
func TestVMCaptureRunningAndKeepAlive(t *testing.T) {
	var rec *standstillRecorder
	e := newVMEnvWith(t, func(o *Options) {
		s, err := sandboxsnap.New(sandboxsnap.Options{Driver: o.Driver.(sandboxsnap.Driver), DataDir: o.DataDir, Logger: o.Logger})
		if err != nil {
			t.Fatal(err)
		}
		rec = &standstillRecorder{Snapshotter: s}
		o.Snapshots = rec
	}, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := e.client
	const src, kid, tpl, tok = "capsrc", "capkid", "tcapsrc", "tok-capsrc"
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: src, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: tok,
	}); err != nil {
		t.Fatal(err)
	}
	// A value only in a process's memory, a counter it keeps writing, and a
	// file on the root disk.
	vmExec(t, c, src, `echo disk-42 > $HOME/ondisk
sh -c 'v=mem-42; echo $$ > /tmp/holder.pid; trap "echo \$v > /tmp/secret" USR1; i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done' </dev/null >/dev/null 2>&1 &
for i in $(seq 100); do [ -s /tmp/count ] && exit 0; sleep 0.1; done; exit 1`)
	count := func(id string) int {
		n, err := strconv.Atoi(strings.TrimSpace(vmExec(t, c, id, "cat /tmp/count")))
		if err != nil {
			t.Fatalf("%s: counter: %v", id, err)
		}
		return n
	}
	keepAlive := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	if code, body := envdStat(t, keepAlive, e.srv.URL, src, tok, "/tmp"); code != http.StatusOK {
		t.Fatalf("envd Stat before the capture: %d %s", code, body)
	}
	pid := vmmPID(t, e.data, src)

	t0 := time.Now()
	if _, err := c.CreateSnapshot(ctx, src, tpl); err != nil {
		t.Fatal(err)
	}
	captureRPC := time.Since(t0)
	standstill := time.Duration(rec.last.Load())
	if got := vmmPID(t, e.data, src); got != pid {
		t.Fatalf("the source's VMM changed across the capture: pid %d → %d (it was restored, not continued)", pid, got)
	}
	if code, body := envdStat(t, keepAlive, e.srv.URL, src, tok, "/tmp"); code != http.StatusOK {
		t.Fatalf("envd Stat on the kept-alive connection after the capture: %d %s", code, body)
	}
	c0 := count(src)
	deadline := time.Now().Add(30 * time.Second)
	for count(src) <= c0 {
		if time.Now().After(deadline) {
			t.Fatal("the source's counter stopped after the capture")
		}
		time.Sleep(200 * time.Millisecond)
	}
	vmExec(t, c, src, "echo later > $HOME/after")

	t1 := time.Now()
	if err := c.PauseSandbox(ctx, src); err != nil {
		t.Fatal(err)
	}
	pause := time.Since(t1)
	// The spawned sandbox takes the network slot the pause freed, so the
	// resumed source gets another one: a connection kept from before now
	// leads to the spawned guest.
	if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: kid, TemplateID: tpl, TemplateKind: sbx.KindSnapshot,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-capkid",
	}); err != nil {
		t.Fatal(err)
	}
	got := vmExec(t, c, kid, `kill -USR1 $(cat /tmp/holder.pid); for i in $(seq 50); do [ -s /tmp/secret ] && break; sleep 0.1; done
cat /tmp/secret $HOME/ondisk; [ -e $HOME/after ] && echo after-capture-write-leaked || true`)
	if got != "mem-42\ndisk-42\n" {
		t.Fatalf("the spawned sandbox's memory and disk: %q, want mem-42 and disk-42 (and none of the source's later writes)", got)
	}

	if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: src, AccessToken: tok}); err != nil {
		t.Fatal(err)
	}
	// The same client, whose connection from before the pause went into
	// the namespace the resume replaced.
	if code, body := envdStat(t, keepAlive, e.srv.URL, src, tok, "/tmp"); code != http.StatusOK {
		t.Fatalf("envd Stat on the kept-alive client after pause and resume: %d %s", code, body)
	}
	t.Logf("CAPTURE source standstill %d ms vs one pause %d ms: ratio %.2f (capture call %d ms)",
		standstill.Milliseconds(), pause.Milliseconds(), float64(standstill)/float64(pause), captureRPC.Milliseconds())

	// The resumed source and the spawned sandbox map their memory
	// copy-on-write (lazy restores): their captures take the pages out of
	// the migration stream. A sandbox spawned from each has that memory.
	const tpl2, tpl3, kid2, kid3 = "tcapsrc2", "tcapkid", "capkid2", "capkid3"
	for _, tc := range []struct{ from, tpl, kid, want string }{
		{src, tpl2, kid2, "mem-42\ndisk-42\nlater\n"},
		{kid, tpl3, kid3, "mem-42\ndisk-42\n"},
	} {
		pid := vmmPID(t, e.data, tc.from)
		if _, err := c.CreateSnapshot(ctx, tc.from, tc.tpl); err != nil {
			t.Fatalf("capture %s: %v", tc.from, err)
		}
		if got := vmmPID(t, e.data, tc.from); got != pid {
			t.Fatalf("%s's VMM changed across the capture: pid %d → %d", tc.from, pid, got)
		}
		stood := time.Duration(rec.last.Load())
		if _, err := c.CreateSandbox(ctx, service.CreateSandboxRequest{
			SandboxID: tc.kid, TemplateID: tc.tpl, TemplateKind: sbx.KindSnapshot,
			VCPUs: 1, MemoryMB: 256, DiskSizeMB: 2048, AccessToken: "tok-" + tc.kid,
		}); err != nil {
			t.Fatal(err)
		}
		got := vmExec(t, c, tc.kid, `rm -f /tmp/secret; kill -USR1 $(cat /tmp/holder.pid); for i in $(seq 50); do [ -s /tmp/secret ] && break; sleep 0.1; done
cat /tmp/secret $HOME/ondisk; cat $HOME/after 2>/dev/null || true`)
		if got != tc.want {
			t.Fatalf("sandbox spawned from the capture of %s: %q, want %q", tc.from, got, tc.want)
		}
		if code, body := envdStat(t, keepAlive, e.srv.URL, tc.from, map[string]string{src: tok, kid: "tok-capkid"}[tc.from], "/tmp"); code != http.StatusOK {
			t.Fatalf("envd Stat of %s after its capture: %d %s", tc.from, code, body)
		}
		// One pause of the same private-RAM machine, the baseline.
		t2 := time.Now()
		if err := c.PauseSandbox(ctx, tc.from); err != nil {
			t.Fatal(err)
		}
		pause := time.Since(t2)
		if _, err := c.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: tc.from}); err != nil {
			t.Fatal(err)
		}
		t.Logf("CAPTURE of %s (private RAM) standstill %d ms vs one pause %d ms: ratio %.2f",
			tc.from, stood.Milliseconds(), pause.Milliseconds(), float64(stood)/float64(pause))
	}
	for _, id := range []string{kid3, kid2, kid, src} {
		if err := c.DestroySandbox(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{tpl3, tpl2, tpl} {
		if err := c.DeleteSnapshot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}
