//go:build vm

package agent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/envd"
	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// probingEnvd is the agent's real envd client, except that right before
// each of the agent's /init calls (a fresh boot, a resume, a child of a
// snapshot) the test itself calls /init on the same guest as an attacker
// would: with no secret, with a wrong one, and with the sandbox's next
// token when it changes (known to a user who created it, not the boot
// secret or the current token).
type probingEnvd struct {
	Envd
	base string
	rec  *initProbes
}

type initProbes struct {
	mu     sync.Mutex
	status []string // "<probe>=<HTTP status>" per attempt, in order
	inits  int
}

func (p probingEnvd) Init(ctx context.Context, req EnvdInit) error {
	probes := []struct{ name, header string }{{"none", ""}, {"wrong", "not-the-secret"}}
	if req.AccessToken != req.CurrentToken {
		// A user knows the token they asked for; knowing the current one
		// (a re-init with the same token) is what authorises a re-key.
		probes = append(probes, struct{ name, header string }{"next-token", req.AccessToken})
	}
	for _, c := range probes {
		code, err := rawInit(ctx, p.base, c.header)
		p.rec.mu.Lock()
		p.rec.status = append(p.rec.status, fmt.Sprintf("%s=%d(%v)", c.name, code, err))
		p.rec.mu.Unlock()
	}
	err := p.Envd.Init(ctx, req)
	if err == nil {
		p.rec.mu.Lock()
		p.rec.inits++
		p.rec.mu.Unlock()
	}
	return err
}

// rawInit posts an /init that would set the attacker's token.
func rawInit(ctx context.Context, base, header string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/init", strings.NewReader(`{"accessToken":"attacker-token"}`))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if header != "" {
		req.Header.Set(envd.AccessTokenHeader, header)
	}
	// A fresh connection each time: a guest restored from a snapshot
	// resets connections an earlier guest at its address had open.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestVMInitSecret: in a real guest, envd refuses /init from anyone but
// the agent — before the agent's first /init (no secret, a wrong one) and
// at every re-keying (resume, a sandbox spawned from a snapshot) — and the
// agent's own flow still works: the attacker's token never takes, the
// agent's does.
func TestVMInitSecret(t *testing.T) {
	rec := &initProbes{}
	e := newVMEnvWith(t, func(o *Options) {
		inner := NewEnvdDialer(nil)
		o.Dial = func(baseURL, token string) Envd {
			return probingEnvd{Envd: inner(baseURL, token), base: baseURL, rec: rec}
		}
	}, "tiny")
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	lastInits := 0
	check := func(step string) {
		t.Helper()
		rec.mu.Lock()
		status, inits := rec.status, rec.inits
		rec.status = nil
		rec.mu.Unlock()
		if inits <= lastInits {
			t.Fatalf("%s: the agent's own /init did not succeed (%d in all)", step, inits)
		}
		lastInits = inits
		if len(status) == 0 {
			t.Fatalf("%s: no /init was probed", step)
		}
		for _, s := range status {
			if !strings.Contains(s, "=401(") {
				t.Errorf("%s: attacker's /init %s, want 401", step, s)
			}
		}
		t.Logf("%s: attacker's /init calls: %v", step, status)
	}
	execOK := func(id string) {
		t.Helper()
		if out := vmExec(t, e.client, id, "echo ok"); out != "ok\n" {
			t.Fatalf("%s: exec: %q", id, out)
		}
	}

	const id = "vminit1"
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: id, TemplateID: "tiny", TemplateKind: sbx.KindBase,
		VCPUs: 1, MemoryMB: 256, DiskSizeMB: 10240, AccessToken: "tok-1",
	}); err != nil {
		t.Fatal(err)
	}
	check("create")
	execOK(id)

	if err := e.client.PauseSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.ResumeSandbox(ctx, service.ResumeSandboxRequest{SandboxID: id, AccessToken: "tok-2"}); err != nil {
		t.Fatal(err)
	}
	check("resume with a new token")
	execOK(id)

	snap, err := e.client.CreateSnapshot(ctx, id, "vminitsnap")
	if err != nil {
		t.Fatal(err)
	}
	const child = "vminit2"
	if _, err := e.client.CreateSandbox(ctx, service.CreateSandboxRequest{
		SandboxID: child, TemplateID: snap.TemplateID, TemplateKind: sbx.KindSnapshot,
		VCPUs: snap.VCPUs, MemoryMB: snap.MemoryMB, DiskSizeMB: snap.DiskSizeMB, AccessToken: "tok-child",
	}); err != nil {
		t.Fatal(err)
	}
	check("snapshot child")
	execOK(child)
	execOK(id)
	for _, s := range []string{child, id} {
		if err := e.client.DestroySandbox(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.client.DeleteSnapshot(ctx, snap.TemplateID); err != nil {
		t.Fatal(err)
	}
}
