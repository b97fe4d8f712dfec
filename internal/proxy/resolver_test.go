package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hearth-sandbox/hearth/internal/proxy"
	"github.com/hearth-sandbox/hearth/internal/store"
	"github.com/hearth-sandbox/hearth/internal/store/storetest"
)

// TestStoreResolver resolves sandboxes from a real store and forwards
// through a stand-in agent path proxy (the real agent's is tested in
// internal/agent): state mapping, agent token, auto-resume.
func TestStoreResolver(t *testing.T) {
	storetest.Run(t, func(t *testing.T, db *store.DB) {
		t.Parallel()
		ctx := context.Background()
		_, team, err := db.CreateUserWithTeam(ctx, store.User{Email: "p@example.com", PasswordHash: "x"}, "team")
		if err != nil {
			t.Fatal(err)
		}
		tpl, err := db.UpsertPlatformTemplate(ctx, store.Template{Name: "base", Kind: store.KindBase, VCPUs: 1, MemoryMB: 256})
		if err != nil {
			t.Fatal(err)
		}
		agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Hearth-Agent-Token") != "agent-secret" {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "agent "+r.URL.Path)
		}))
		t.Cleanup(agent.Close)
		if _, err := db.UpsertHost(ctx, store.Host{ID: "h1", Name: "h1", Address: agent.URL, Status: store.HostReady}); err != nil {
			t.Fatal(err)
		}
		mk := func(status store.SandboxStatus, autoResume bool) store.Sandbox {
			sb, err := db.CreateSandbox(ctx, store.Sandbox{TeamID: team.ID, TemplateID: tpl.ID, Status: status, Host: "h1",
				VCPUs: 1, MemoryMB: 256, AutoResume: autoResume, AccessToken: "tok"})
			if err != nil {
				t.Fatal(err)
			}
			return sb
		}
		running := mk(store.StatusRunning, false)
		paused := mk(store.StatusPaused, false)
		napper := mk(store.StatusPaused, true)
		booting := mk(store.StatusCreating, false)

		var resumed []string
		res := &proxy.StoreResolver{
			Store: db,
			Route: proxy.AgentRoute("agent-secret"),
			Resume: func(ctx context.Context, sb store.Sandbox) error {
				resumed = append(resumed, sb.ID)
				_, err := db.UpdateSandboxStatus(ctx, sb.ID, []store.SandboxStatus{store.StatusPaused}, store.StatusRunning, "")
				return err
			},
		}
		for _, tc := range []struct {
			name, id string
			want     error
		}{
			{"running", running.ID, nil},
			{"paused", paused.ID, proxy.ErrPaused},
			{"creating", booting.ID, proxy.ErrNotRunning},
			{"missing", "nosuchsandbox", proxy.ErrNotFound},
		} {
			_, err := res.Resolve(ctx, tc.id, 49983)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%s: Resolve err %v, want %v", tc.name, err, tc.want)
			}
		}

		srv := httptest.NewServer(proxy.New(res, proxy.Options{}))
		t.Cleanup(srv.Close)
		get := func(id string) (int, string) {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/health?x=1", nil)
			req.Header.Set(proxy.HeaderSandboxID, id)
			req.Header.Set(proxy.HeaderSandboxPort, "49983")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if code, body := get(running.ID); code != http.StatusOK || body != "agent /sandboxes/"+running.ID+"/proxy/49983/health" {
			t.Fatalf("running: %d %q", code, body)
		}
		if code, _ := get(paused.ID); code != http.StatusConflict {
			t.Fatalf("paused without auto-resume: %d, want 409", code)
		}
		if code, body := get(napper.ID); code != http.StatusOK || !strings.Contains(body, napper.ID) {
			t.Fatalf("auto-resume: %d %q", code, body)
		}
		if len(resumed) != 1 || resumed[0] != napper.ID {
			t.Fatalf("resumed %v, want [%s]", resumed, napper.ID)
		}
	})
}
